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
import sys
import time
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

MARKERS = ("COMPLETE", "FAILED")


def _sigterm(exc: BaseException) -> bool:
    """Lightning's ``SIGTERMException`` (checked without importing Lightning: only a process that imported
    it can have raised one, and the entry points report config errors before loading it)."""
    mod = sys.modules.get("lightning.pytorch.utilities.exceptions")
    return mod is not None and isinstance(exc, mod.SIGTERMException)

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
    if _sigterm(exc):
        return 128 + int(signal.SIGTERM)
    if _interrupted(exc):
        return 128 + int(signal.SIGINT)
    if isinstance(exc, SystemExit):
        code = exc.code
        return code if isinstance(code, int) and code != 0 else 1
    return 1


def describe(exc: BaseException, step: int | None) -> str:
    """One line: what ended the run, at which global step."""
    if _sigterm(exc) or isinstance(exc, _Terminated):
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


def record_failure(run_dir: str | os.PathLike, exc: BaseException, step: int | None,
                   rank: int | None = None) -> tuple[int, str]:
    """Log the failure to train.log, write FAILED; returns (exit code, reason). ``rank``: a DDP rank,
    named in the reason."""
    reason = describe(exc, step)
    if rank is not None:
        reason = f"DDP rank {rank}: {reason}"
    from t2ilab.errors import debug_requested, user_error

    if user_error(exc) is not None and not debug_requested():
        # a user error: the entry point prints its message once, on stderr (no traceback); the run's log
        # files get the line too
        _to_log_files(logging.ERROR, f"run FAILED: {reason}")
    else:
        quiet = isinstance(exc, (SystemExit, KeyboardInterrupt))
        log.error("run FAILED: %s", reason, exc_info=None if quiet else exc)
    mark(run_dir, "FAILED", reason, step)
    return exit_code(exc), reason


def _to_log_files(level: int, msg: str) -> None:
    """Log ``msg`` to the file handlers only (train.log / sample.log ...), not to the console."""
    record = log.makeRecord(log.name, level, __file__, 0, msg, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and record.levelno >= handler.level:
            handler.handle(record)


def is_interrupt(exc: BaseException) -> bool:
    """SIGTERM, Ctrl-C or a requested exit (not an error): rank 0 records those for the whole run."""
    return _sigterm(exc) or isinstance(exc, (KeyboardInterrupt, SystemExit)) or _interrupted(exc)


@contextlib.contextmanager
def recorded(run_dir: str | os.PathLike) -> Iterator[None]:
    """``sample``/``eval``: mark the (Hydra-created) run dir COMPLETE or FAILED with the reason, so a
    failed command never leaves an unexplained, empty-looking run dir behind. SIGTERM (a scheduler's
    kill, a timeout) is turned into an exit of status 143 that is recorded like any other ending."""
    def on_sigterm(signum: int, frame: Any) -> None:
        raise _Terminated(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_sigterm) if _main_thread() else None
    try:
        yield
    except BaseException as e:
        if Path(run_dir).is_dir() and os.access(run_dir, os.W_OK):
            record_failure(run_dir, e, None)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if Path(run_dir).is_dir():
        mark(run_dir, "COMPLETE")


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


class _Terminated(SystemExit):
    """SIGTERM during sample/eval: exits 143 and is described as SIGTERM in the FAILED marker."""


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
