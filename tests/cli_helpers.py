"""Helpers shared by the tests that run the real entry points in subprocesses (``python -m t2ilab.<module>``):
a tiny model/data override set, ``run`` (W&B offline, the command's stderr in the failure message) and
``wandb_run`` (the one offline W&B run folder of a run dir)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

TINY = ["model.net.base_channels=16", "model.net.channel_mult=[1,2]", "model.net.num_res_blocks=1",
        "model.sampling.num_steps=3", "data.num_train=256", "data.num_val=64", "seed=3"]


def run(module: str, *args: str, timeout: int = 300, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    r = subprocess.run([sys.executable, "-m", f"t2ilab.{module}", *args], capture_output=True, text=True,
                       timeout=timeout, env=env)
    if check and r.returncode != 0:
        raise AssertionError(f"t2ilab.{module} failed ({r.returncode}):\n{r.stderr[-4000:]}")
    return r


def wandb_run(run_dir: Path) -> Path:
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    return runs[0]


def copy_of(run_dir: Path, dest: Path) -> Path:
    """A copy of a run dir (its checkpoints' recorded paths still name the original; nothing reads them)."""
    shutil.copytree(run_dir, dest)
    return dest
