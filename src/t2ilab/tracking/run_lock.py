"""One owner per run dir: the process that writes a run dir (rank 0 of a DDP job) holds an exclusive
``fcntl`` lock on ``<run_dir>/.lock`` for its whole life. The OS releases it when the process ends,
however it ends (``kill -9``, a Slurm requeue), so a relaunch or requeue after the owner is gone just
works, while a second launch into a run dir that is in use fails at once, naming the holder."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
from pathlib import Path
from typing import Iterator

from t2ilab.errors import UserError
from t2ilab.tracking.launch import describe_slurm, slurm_identity, user_command

LOCK_NAME = ".lock"


class RunDirBusyError(UserError):
    """Another live process owns the run dir."""


def _holder() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "slurm": slurm_identity(),
            "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "command": user_command()}


def _describe(raw: str) -> str:
    try:
        h = json.loads(raw)
    except ValueError:
        return "another process"
    who = f"pid {h.get('pid')} on {h.get('host')}"
    if h.get("slurm"):
        who += f" ({describe_slurm(h['slurm'])})"
    return f"{who}, running since {h.get('since')}"


@contextlib.contextmanager
def owned(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold the run dir's lock for the duration; raise :class:`RunDirBusyError` at once when another live
    process holds it. Without ``fcntl`` (Windows) no lock is taken."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux/macOS
        yield Path(run_dir) / LOCK_NAME
        return
    path = Path(run_dir) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raw = path.read_text(errors="replace") if path.is_file() else ""
        os.close(fd)
        raise RunDirBusyError(
            f"run dir {run_dir} is in use by {_describe(raw)}: two launches into one run dir would overwrite "
            "each other's checkpoints. Wait for it to finish (it resumes from last.ckpt if relaunched later), "
            "or launch into another run dir (T2ILAB_RUN_NAME=<name> or hydra.run.dir=<dir>)") from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(_holder()).encode())
        yield path
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
