"""Against a real Slurm (issue 12): a grid sweep through ``hydra/launcher=slurm`` (submitit) runs every
job to completion in its own run dir, grouped and tagged in W&B and reportable as one table; a running
job that gets the preemption / time-limit signal writes a checkpoint of its current step, is requeued
by submitit, and the requeued job resumes in the same run dir and the same W&B run without losing a step.

Run with ``pytest -m slurm`` (``.ci/run`` does). The fixture starts a one-node cluster on localhost with
scripts/slurm/local_cluster.sh (root; installs Debian's Slurm + munge when missing) unless one is
already reachable through ``SLURM_CONF``, and stops exactly the daemons it started.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from t2ilab.tracking import run_status
from t2ilab.compat.wandb import read_offline_run

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parents[1]
TINY = ["debug=fast", "model.net.base_channels=16", "model.net.channel_mult=[1,2]", "model.net.num_res_blocks=1",
        "model.sampling.num_steps=3", "data.num_train=256", "data.num_val=64"]
CPU_JOB = ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1",
           "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=30",
           "metrics.num_samples=32"]  # each job ends with a (small) evaluation of its final model (eval_after=auto)


def _reachable(env: dict) -> bool:
    try:
        return subprocess.run(["sinfo", "-h"], env=env, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module")
def slurm_env(tmp_path_factory):
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    if env.get("SLURM_CONF") and _reachable(env):
        yield env
        return
    state = tmp_path_factory.mktemp("slurm")
    script = ROOT / "scripts" / "slurm" / "local_cluster.sh"
    env.update(T2ILAB_SLURM_DIR=str(state), SLURM_CONF=str(state / "slurm.conf"))
    r = subprocess.run(["bash", str(script), "start"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"could not start the local Slurm cluster:\n{r.stdout}\n{r.stderr}"
    try:
        yield env
    finally:
        subprocess.run(["bash", str(script), "stop"], env=env, capture_output=True, timeout=60)


def launch(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "t2ilab.train", "-m", *CPU_JOB, *TINY, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)


def squeue(env: dict, job: str, fmt: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job, "-o", fmt], env=env, capture_output=True,
                          text=True).stdout.strip()


def test_grid_sweep_runs_every_job_in_its_own_dir_grouped_and_reportable(slurm_env, tmp_path):
    sweep = tmp_path / "sweep"
    proc = launch(slurm_env, "seed=1,2", f"hydra.sweep.dir={sweep}", f"paths.cache_dir={tmp_path / 'c'}")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    job_ids, wandb_ids = set(), set()
    for num, seed in ((0, 1), (1, 2)):
        run_dir = sweep / str(num)
        assert run_status.status_of(run_dir)["status"] == "COMPLETE"
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["seed"] == seed and manifest["slurm_job_id"]
        # the array task (<array job>_<task>), and the command the user typed, not submitit's _submit.py
        assert manifest["slurm_job_id"] == manifest["slurm"]["job"].replace("slurm/", "")
        assert "_" in manifest["slurm_job_id"] and manifest["slurm"]["restart_count"] == 0
        assert "seed=1,2" in manifest["command"] and "submitit" not in " ".join(manifest["command"])
        job_ids.add(manifest["slurm_job_id"])
        logged = read_offline_run(run_dir)
        assert logged["exit_code"] == 0 and torch.isfinite(torch.tensor(logged["summary"]["val/loss"]))
        assert logged["group"] == sweep.name and logged["tags"] == [f"seed={seed}"]  # the sweep's name
        assert logged["name"] == f"{sweep.name}/{num}" and logged["job_type"] == "train"
        wandb_ids.add(logged["id"])
    assert len(job_ids) == 2 and len(wandb_ids) == 2  # two array tasks, two W&B runs
    report = subprocess.run([sys.executable, "-m", "t2ilab.report", str(sweep), "--metric", "val/loss"],
                            env=slurm_env, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stdout + report.stderr
    assert "| 2 |" in (sweep / "report.md").read_text()  # one group, both seeds aggregated
    # a run trained on Slurm is reproduced here from its manifest (CPU: same metrics; the Slurm job had
    # 1 CPU, this rerun may use more threads, hence a tolerance instead of bit equality)
    repro = subprocess.run([sys.executable, "-m", "t2ilab.reproduce", str(sweep / "0"), "--out",
                            str(tmp_path / "repro"), "--rtol", "1e-4", "--atol", "1e-6"],
                           env=slurm_env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert repro.returncode == 0 and "REPRODUCED" in repro.stdout, repro.stdout[-3000:] + repro.stderr[-3000:]


def test_preempted_job_is_requeued_and_resumes_in_the_same_run_dir_and_wandb_run(slurm_env, tmp_path):
    sweep, max_steps = tmp_path / "sweep", 150
    proc = launch(slurm_env, "seed=5", f"trainer.max_steps={max_steps}", "trainer.val_check_interval=50",
                  "callbacks.model_checkpoint.every_n_train_steps=10", "callbacks.sample_grid=null",
                  f"hydra.sweep.dir={sweep}", f"paths.cache_dir={tmp_path / 'c'}")
    run_dir, deadline = sweep / "0", time.time() + 300
    while not (run_dir / "checkpoints" / "step=0000010.ckpt").exists():  # the job is training
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-4000:]
        time.sleep(0.2)
    job = next(p.name for p in (sweep / ".submitit").iterdir() if p.name.isdigit())
    wandb_id = (run_dir / "wandb_id").read_text().strip()
    # what Slurm sends `signal_delay_s` before the time limit, and on preemption (submitit: USR2)
    subprocess.run(["scancel", "--signal=USR2", job], env=slurm_env, check=True)
    while squeue(slurm_env, job, "%T") not in ("PENDING", "RUNNING") or not (run_dir / "FAILED").exists():
        assert time.time() < deadline, (squeue(slurm_env, job, "%T"), proc.stdout.read()[-4000:])
        time.sleep(0.2)
    interrupted = run_status.status_of(run_dir)
    assert f"job {job} was requeued" in interrupted["reason"], interrupted
    cut = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert cut["global_step"] == interrupted["step"] >= 10  # the step it was at when signalled
    # Slurm holds a requeued job back ~2 minutes (BeginTime); release it now
    subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], env=slurm_env, check=True)
    out, _ = proc.communicate(timeout=600)  # the launcher waits for the requeued job's result
    assert proc.returncode == 0, out[-4000:]
    assert run_status.status_of(run_dir)["status"] == "COMPLETE"
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    # no step lost or repeated: every batch trained exactly once
    assert final["global_step"] == final["t2ilab"]["batches_seen"] == max_steps
    log = (run_dir / "train.log").read_text()
    assert "ckpt_path=auto: resuming from" in log and f"resuming W&B run {wandb_id}" in log
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    ids = [p.name.rsplit("-", 1)[-1] for p in runs]
    # one W&B run: two launches, plus one segment with the rows wandb's service lost when the requeue's SIGTERM
    # killed it before it wrote them (compat/wandb.finish_lost_tail)
    assert set(ids) == {wandb_id} and len(ids) in (2, 3), ids
    merged = [row["trainer/global_step"] for row in read_offline_run(run_dir)["history"] if "trainer/global_step" in row]
    assert merged == sorted(merged)  # the segments read as one monotonic history
    resumed = read_offline_run(runs[-1])
    steps = [row["trainer/global_step"] for row in resumed["history"] if "trainer/global_step" in row]
    assert resumed["exit_code"] == 0 and min(steps) >= cut["global_step"] and max(steps) >= max_steps - 1


def test_a_submission_slurm_rejects_is_one_message_and_leaves_no_sweep_dir(slurm_env, tmp_path):
    sweep = tmp_path / "sweep"
    proc = launch(slurm_env, "seed=1,2", "hydra.launcher.partition=no_such_partition", f"hydra.sweep.dir={sweep}")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "invalid partition" in out.lower(), out[-3000:]
    assert "Error: Slurm refused the sweep's submission" in out and "Traceback" not in out, out[-3000:]
    assert not sweep.exists() and "was removed" in out  # nothing was submitted: nothing is left behind
    assert shutil.which("sbatch")
