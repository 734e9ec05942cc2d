"""Run manifest: everything needed to reproduce a run months later, written at start."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from t2ilab.tracking.launch import slurm_identity, slurm_job, user_command

PACKAGES = ("t2ilab", "torch", "torchvision", "lightning", "hydra-core", "omegaconf", "wandb", "open_clip_torch",
            "diffusers", "torch-fidelity", "torchmetrics", "numpy", "pillow")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state(repo: str | os.PathLike | None = None) -> dict[str, Any]:
    """Commit SHA and dirty flag of the source checkout (None outside a git checkout)."""
    repo = Path(repo or Path(__file__).resolve().parents[3])

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"sha": sha, "dirty": bool(status) if status is not None else None, "branch": git("rev-parse", "--abbrev-ref", "HEAD")}


def hydra_overrides() -> list[str]:
    """The command-line overrides of the current Hydra run ([] outside Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:  # not running under @hydra.main (tests, notebooks)
        return []


def build_manifest(config: dict, seed: int | None) -> dict[str, Any]:
    return {
        "command": user_command(),
        "process_command": [sys.executable, *sys.argv],
        "overrides": hydra_overrides(),
        "seed": seed,
        "git": git_state(),
        "versions": package_versions(),
        "start_time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "slurm_job_id": slurm_job(),  # <array job>_<task> for an array task
        "slurm": slurm_identity(),
        "config": config,
    }


def write_manifest(run_dir: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    path = Path(run_dir) / "manifest.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    tmp.replace(path)
    return path
