"""How a run ended, recorded so that tools (and people) can tell success from failure.

* ``COMPLETE`` or ``FAILED`` (JSON: status, reason, step, time) in the run dir — exactly one;
* SIGTERM (cluster preemption / time limit) and SIGINT (Ctrl-C) first write ``last.ckpt`` of the
  current step (atomically, via models.atomic_io), then the process exits non-zero
  (128 + signal number, the shell convention), never 0;
* the exit code and reason go to the W&B run (``finish_wandb``) and to train.log.

Lightning turns SIGTERM into ``SIGTERMException`` — a ``SystemExit`` without a code, i.e. exit
status 0 — and Ctrl-C into ``sys.exit(1)`` after its own cleanup; ``exit_code`` maps both.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any, Iterator

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

MARKERS = ("COMPLETE", "FAILED")

# environment variables that give a process's rank before any process group exists: torchrun (RANK,
# GROUP_RANK = node), Lightning's launcher (LOCAL_RANK for its children, NODE_RANK per node), Slurm tasks
# (SLURM_PROCID), LSF/jsrun (JSM_NAMESPACE_RANK)
RANK_VARS = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def launch_rank() -> int:
    """0 for the process that owns the run dir's files (manifest, config, markers, W&B run, samples);
    another number for every other DDP process: Lightning's launcher re-runs the entry point for local
    ranks 1..N-1 (``LOCAL_RANK``), and each node (``NODE_RANK``) / Slurm task (``SLURM_PROCID``) runs it
    too — all *before* ``trainer.fit`` sets up the process group, so the environment is what tells them
    apart. Non-zero when any of ``RANK_VARS`` is (the first such value)."""
    for var in RANK_VARS:
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) != 0:
            return int(value)
    return 0


def _interrupted(exc: BaseException) -> bool:
    """Ctrl-C, also after Lightning turned it into ``sys.exit(1)``."""
    return isinstance(exc, KeyboardInterrupt) or isinstance(exc.__context__, KeyboardInterrupt)


def exit_code(exc: BaseException) -> int:
    """The process exit status a run that ended with ``exc`` must have (never 0)."""
    if isinstance(exc, SIGTERMException):
        return 128 + int(signal.SIGTERM)
    if _interrupted(exc):
        return 128 + int(signal.SIGINT)
    if isinstance(exc, SystemExit):
        code = exc.code
        return code if isinstance(code, int) and code != 0 else 1
    return 1


def describe(exc: BaseException, step: int | None) -> str:
    """One line: what ended the run, at which global step."""
    if isinstance(exc, SIGTERMException):
        what = "SIGTERM (preempted or killed by the scheduler)"
    elif _interrupted(exc):
        what = "SIGINT (interrupted)"
    elif isinstance(exc, SystemExit) and exc.code == -1 and os.environ.get("SLURM_JOB_ID"):
        # submitit's USR2 handler (preemption / time limit) requeued the job, then called sys.exit(-1)
        what = (f"Slurm preemption or time limit: job {os.environ['SLURM_JOB_ID']} was requeued and resumes "
                "from last.ckpt in this run dir")
    else:
        what = f"{type(exc).__name__}: {exc}"
    return f"{what} at global step {step}" if step is not None else what


def mark(run_dir: str | os.PathLike, status: str, reason: str | None = None, step: int | None = None) -> Path:
    """Write ``<run_dir>/<status>`` (COMPLETE or FAILED) and remove the other marker."""
    if status not in MARKERS:
        raise ValueError(f"status must be one of {MARKERS}, got {status!r}")
    run_dir = Path(run_dir)
    for other in MARKERS:
        (run_dir / other).unlink(missing_ok=True)
    path = run_dir / status
    tmp = run_dir / f".{status}.{os.getpid()}.tmp"  # whole file or none, also when two DDP ranks fail at once
    tmp.write_text(json.dumps({"status": status, "reason": reason, "step": step,
                               "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")
    tmp.replace(path)
    return path


class InterruptCheckpoint(L.Callback):
    """On SIGTERM / SIGINT / SystemExit, save ``last.ckpt`` of the current step (atomically) before the process
    exits, so ``ckpt_path=<run>/checkpoints/last.ckpt`` (or a requeue) continues from there. Also when fit
    ends normally at a step the periodic checkpoints did not cover (``max_steps`` not a multiple of
    ``every_n_train_steps``): ``last.ckpt`` is then the final model, not the one of the last interval."""

    def __init__(self) -> None:
        self.saved: Path | None = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        ck = trainer.checkpoint_callback
        if ck is None or getattr(ck, "_last_global_step_saved", None) == trainer.global_step:
            return
        final = Path(getattr(ck, "dirpath", None) or Path(trainer.default_root_dir) / "checkpoints") / "last.ckpt"
        final.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(final)
        if trainer.is_global_zero:
            log.info("final checkpoint (step %d) -> %s", trainer.global_step, final)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not is_interrupt(exception):
            return  # errors (NaN guard, bad data, ...) keep the last good checkpoint instead
        # SystemExit: something asked the process to end mid-fit, e.g. submitit's USR2 handler after it
        # requeued the job on Slurm (preemption / time limit); the requeued job resumes from this
        ck = trainer.checkpoint_callback
        dirpath = Path(getattr(ck, "dirpath", None) or Path(trainer.default_root_dir) / "checkpoints")
        dirpath.mkdir(parents=True, exist_ok=True)
        final = dirpath / "last.ckpt"
        try:  # atomic: train.py gives the trainer models.atomic_io.AtomicCheckpointIO
            trainer.save_checkpoint(final)
            if trainer.is_global_zero:
                self.saved = final
                log.warning("interrupted at global step %d: checkpoint written to %s", trainer.global_step, final)
        except Exception as e:  # noqa: BLE001 - never mask the interrupt itself
            log.error("could not write the interrupt checkpoint (%s: %s); the last periodic one is kept",
                      type(e).__name__, e)


def record_failure(run_dir: str | os.PathLike, exc: BaseException, step: int | None,
                   rank: int | None = None) -> tuple[int, str]:
    """Log the failure to train.log, write FAILED; returns (exit code, reason). ``rank``: a DDP rank,
    named in the reason."""
    reason = describe(exc, step)
    if rank is not None:
        reason = f"DDP rank {rank}: {reason}"
    quiet = isinstance(exc, (SystemExit, KeyboardInterrupt))
    log.error("run FAILED: %s", reason, exc_info=None if quiet else exc)
    mark(run_dir, "FAILED", reason, step)
    return exit_code(exc), reason


def is_interrupt(exc: BaseException) -> bool:
    """SIGTERM, Ctrl-C or a requested exit (not an error): rank 0 records those for the whole run."""
    return isinstance(exc, (SIGTERMException, KeyboardInterrupt, SystemExit)) or _interrupted(exc)


class DDPFailure(L.Callback):
    """DDP: the first rank whose fit fails with an error writes ``FAILED`` (naming the rank) from
    ``on_exception``, i.e. before Lightning tears its process group down. The other ranks fail only
    after that (a closed connection, or Lightning's launcher SIGKILLs rank 0 when a child rank dies), so
    the marker names the root cause; the entry point adds what rank 0 saw. Single-process runs: no-op."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if trainer.world_size <= 1 or is_interrupt(exception) or status_of(self.run_dir) is not None:
            return
        try:
            record_failure(self.run_dir, exception, trainer.global_step, rank=trainer.global_rank)
        except Exception as e:  # noqa: BLE001 - never mask the failure itself
            log.error("could not write the FAILED marker (%s: %s)", type(e).__name__, e)


@contextlib.contextmanager
def recorded(run_dir: str | os.PathLike) -> Iterator[None]:
    """``sample``/``eval``: mark the (Hydra-created) run dir COMPLETE or FAILED with the reason, so a
    failed command never leaves an unexplained, empty-looking run dir behind."""
    try:
        yield
    except BaseException as e:
        if Path(run_dir).is_dir() and os.access(run_dir, os.W_OK):
            record_failure(run_dir, e, None)
        raise
    if Path(run_dir).is_dir():
        mark(run_dir, "COMPLETE")


def clear(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """Remove the COMPLETE/FAILED marker (a relaunch is running again); returns what it said."""
    previous = status_of(run_dir)
    for m in MARKERS:
        (Path(run_dir) / m).unlink(missing_ok=True)
    return previous


def status_of(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The marker's content, or None while the run is running (or was killed with -9)."""
    for m in MARKERS:
        p = Path(run_dir) / m
        if p.is_file():
            return json.loads(p.read_text())
    return None
