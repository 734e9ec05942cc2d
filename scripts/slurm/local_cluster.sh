#!/usr/bin/env bash
# A single-node Slurm cluster on localhost (Debian's Slurm 22.05 + munge), for the `slurm` tests and for
# trying the submitit launcher without a cluster. Needs root (apt-get, munged as the munge user).
#
#   scripts/slurm/local_cluster.sh start    # installs the packages if missing, starts munged, slurmctld, slurmd
#   export SLURM_CONF=/tmp/t2ilab-slurm/slurm.conf   # (printed by start) so sbatch/squeue find the cluster
#   scripts/slurm/local_cluster.sh status
#   scripts/slurm/local_cluster.sh stop     # stops exactly the daemons this script started (by their PIDs)
#
# State (config, spool, logs, PID files) lives in $T2ILAB_SLURM_DIR (default /tmp/t2ilab-slurm); nothing in
# /etc is changed, so an existing Slurm installation is left alone.
set -euo pipefail

DIR="${T2ILAB_SLURM_DIR:-/tmp/t2ilab-slurm}"
CONF="$DIR/slurm.conf"
export SLURM_CONF="$CONF"

die() { echo "local_cluster.sh: $*" >&2; exit 1; }

install_packages() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
    && command -v munged >/dev/null && return
  [ "$(id -u)" -eq 0 ] || die "Slurm is not installed and installing it needs root: apt-get install slurmctld slurmd slurm-client munge"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
}

write_conf() {
  local cpus mem
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
  mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
  cat > "$CONF" <<EOF
# written by scripts/slurm/local_cluster.sh: a one-node test cluster on localhost
ClusterName=t2ilab-local
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=30
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
}

start_munge() {
  if [ -S /run/munge/munge.socket.2 ] && munge -n >/dev/null 2>&1; then return; fi  # already running
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  [ -f /etc/munge/munge.key ] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; }
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do [ -f /run/munge/munged.pid ] && break; sleep 0.1; done
  cp /run/munge/munged.pid "$DIR/munged.pid"  # ours: stop kills it
}

wait_idle() {
  for _ in $(seq 100); do
    state=$(sinfo -h -n localhost -o %T 2>/dev/null || true)
    case "$state" in idle*|mix*|alloc*) return 0 ;; esac
    sleep 0.3
  done
  die "node never became idle (sinfo says '${state:-nothing}'); logs: $DIR/log/"
}

start() {
  [ "$(id -u)" -eq 0 ] || die "start needs root (slurmd runs jobs as any user; munged runs as munge)"
  install_packages
  if [ -f "$DIR/slurmctld.pid" ] && kill -0 "$(cat "$DIR/slurmctld.pid")" 2>/dev/null; then
    echo "already running (SLURM_CONF=$CONF)"; return
  fi
  write_conf
  start_munge
  slurmctld -f "$CONF"                       # daemonises, writes $DIR/slurmctld.pid
  slurmd -f "$CONF" -N localhost
  for f in slurmctld slurmd; do
    for _ in $(seq 50); do [ -s "$DIR/$f.pid" ] && break; sleep 0.1; done
    [ -s "$DIR/$f.pid" ] || die "$f did not start; see $DIR/log/$f.log"
  done
  scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
  wait_idle
  echo "Slurm is up on localhost (partition debug). Use it with: export SLURM_CONF=$CONF"
}

stop() {
  local pid
  for f in slurmd slurmctld munged; do
    [ -f "$DIR/$f.pid" ] || continue
    pid=$(cat "$DIR/$f.pid")
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$DIR/$f.pid"
  done
  echo "stopped the daemons started by this script (state kept in $DIR)"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) sinfo -N -l; squeue ;;
  *) die "usage: $0 start|stop|status" ;;
esac
