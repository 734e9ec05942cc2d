"""Find t2ilab run dirs under the given paths and load what a report needs from each.

A run's config is its manifest's resolved config, flattened to dotted keys, plus Hydra's group
choices (``model``, ``logger``, ``experiment``, ... from ``.hydra/hydra.yaml``) as keys of their own.
A run dir is a directory holding ``manifest.json`` (written by ``t2ilab.train`` / ``t2ilab.eval``);
a path may be a run dir or any directory with run dirs below it (a Hydra multirun/sweep dir, a
folder of sweeps). Only finished runs (``COMPLETE`` marker) are used; every other one is listed
with the reason it was left out, and so is a dir that looks like a run (``.hydra/``, a marker) but holds no
manifest. Each run knows its ``kind`` (train, eval, roundtrip, ...): a report compares runs of one kind.

A run's metrics come from the one run reader, ``tracking/run_metrics.read_metrics`` (shared with
``t2ilab.reproduce``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from t2ilab.tracking.run_metrics import History, read_metrics
from t2ilab.tracking.run_status import status_of
from t2ilab.utils.config import flatten

SKIP_DIRS = {"wandb", "checkpoints", ".hydra", "__pycache__"}  # never hold run dirs


@dataclass
class Run:
    """One finished run: flattened config (dotted keys), seed, final metrics, history, sample grid."""

    path: Path
    config: dict[str, Any]
    seed: Any
    final: dict[str, float]
    history: History = field(default_factory=dict)
    grid: Path | None = None
    choices: dict[str, Any] = field(default_factory=dict)
    kind: str = "train"  # the entry point that made it: train, eval, roundtrip, ... (manifest's task_name)


@dataclass
class LoadResult:
    """Usable runs, plus "path: why" lines for missing paths and for runs left out."""

    runs: list[Run]
    missing: list[str]
    excluded: list[str]
    failed: list[Run] = field(default_factory=list)  # FAILED runs with a manifest: their groups are flagged


def _natural(p: Path) -> list[Any]:
    """Sort key: numbers inside names compare as numbers (sweep/10 after sweep/9)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(p))]


RUN_SIGNS = {".hydra", "COMPLETE", "FAILED", "checkpoints"}  # a dir with one of these was meant to be a run dir


def find_run_dirs(root: Path, without_manifest: list[Path] | None = None) -> list[Path]:
    """``root`` if it is a run dir, else every run dir below it (not descending into run dirs). Dirs that look
    like runs (Hydra's ``.hydra/``, a marker, ``checkpoints/``) but hold no manifest are appended to
    ``without_manifest`` (a launch that stopped before writing it)."""
    if (root / "manifest.json").is_file():
        return [root]
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        if "manifest.json" in filenames:
            found.append(Path(dirpath))
            dirnames[:] = []
            continue
        if without_manifest is not None and RUN_SIGNS & {*dirnames, *filenames}:
            without_manifest.append(Path(dirpath))
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
    return sorted(found, key=_natural)


def _why_no_manifest(run_dir: Path) -> str:
    status = None
    try:
        status = status_of(run_dir)
    except (OSError, ValueError):
        pass
    if status and status.get("status") == "FAILED":
        return f"{run_dir}: no manifest.json; FAILED before the run started ({status.get('reason') or 'no reason'})"
    return f"{run_dir}: no manifest.json (the launch stopped before writing it, or it is not a t2ilab run dir)"


def sample_grid(run_dir: Path) -> Path | None:
    """The run's newest sample grid: ``samples/final_grid.png`` (older runs: ``final/grid.png``), else the highest-step
    ``samples/grid_step*.png``, else the newest image the grid callback logged to W&B."""
    for final in (run_dir / "samples" / "final_grid.png", run_dir / "samples" / "final" / "grid.png"):
        if final.is_file():
            return final
    steps = sorted(run_dir.glob("samples/grid_step*.png"), key=_natural)
    if steps:
        return steps[-1]
    logged = sorted(run_dir.glob("wandb/*run-*/files/media/images/samples/*.png"), key=lambda p: p.stat().st_mtime)
    return logged[-1] if logged else None


def hydra_choices(run_dir: Path) -> dict[str, Any]:
    """Hydra's config-group choices of the run (``{"model": "diffusion", "logger": "wandb", ...}``,
    from ``.hydra/hydra.yaml``; ``hydra/*`` groups left out); {} when absent or unreadable."""
    import yaml

    try:
        loaded = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())
        choices = loaded["hydra"]["runtime"]["choices"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return {}
    return {k: v for k, v in choices.items() if k != "hydra" and not k.startswith("hydra/")}


def failed_run(run_dir: Path) -> Run | None:
    """A FAILED run's config (no metrics), so the report can say which group lost a seed; None without a
    readable manifest."""
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    config = flatten(manifest.get("config") or {})
    choices = {k: v for k, v in hydra_choices(run_dir).items() if k not in config}
    kind = str((manifest.get("config") or {}).get("task_name") or "train")
    return Run(run_dir, {**choices, **config}, manifest.get("seed", config.get("seed")), {}, kind=kind)


def load_run(run_dir: Path) -> Run | str:
    """The run, or one line saying why it cannot be used."""
    try:
        status = status_of(run_dir)
    except (OSError, ValueError) as e:
        return f"{run_dir}: unreadable COMPLETE/FAILED marker ({e})"
    if status is None:
        return f"{run_dir}: not finished (no COMPLETE or FAILED marker: still running, or killed)"
    if status.get("status") == "FAILED":
        return f"{run_dir}: FAILED ({status.get('reason') or 'no reason recorded'})"
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        return f"{run_dir}: unreadable manifest.json ({e})"
    config = flatten(manifest.get("config") or {})
    choices = {k: v for k, v in hydra_choices(run_dir).items() if k not in config}
    metrics = read_metrics(run_dir)
    if not metrics.final:
        why = f"; {'; '.join(metrics.notes)}" if metrics.notes else ""
        return f"{run_dir}: no final metrics (no metrics.json, metrics.csv or W&B summary values{why})"
    seed = manifest.get("seed", config.get("seed"))
    kind = str((manifest.get("config") or {}).get("task_name") or "train")
    return Run(run_dir, {**choices, **config}, seed, metrics.final, metrics.history, sample_grid(run_dir), choices,
               kind)


def _looks_like_wandb_project(text: str) -> bool:
    return re.fullmatch(r"[\w.-]+/[\w.-]+", text) is not None


def collect_runs(paths: list[str | os.PathLike]) -> LoadResult:
    """Load every run dir under ``paths``; nonexistent paths and unusable runs are reported, not raised."""
    runs: list[Run] = []
    missing: list[str] = []
    excluded: list[str] = []
    failed: list[Run] = []
    seen: set[Path] = set()
    for raw in paths:
        root = Path(raw)
        if not root.exists():
            hint = (" (W&B projects are not read: pass local run or sweep dirs)"
                    if _looks_like_wandb_project(str(raw)) else "")
            missing.append(f"{raw}: does not exist{hint}")
            continue
        if not root.is_dir():
            missing.append(f"{raw}: not a directory (give a run dir or a sweep dir)")
            continue
        orphans: list[Path] = []
        dirs = find_run_dirs(root, orphans)
        if not dirs and not orphans:
            excluded.append(f"{raw}: no manifest.json (not a t2ilab run dir, and no run dirs below it)")
        excluded += [_why_no_manifest(d) for d in sorted(orphans, key=_natural) if d.resolve() not in seen]
        seen.update(d.resolve() for d in orphans)
        for d in dirs:
            if d.resolve() in seen:
                continue
            seen.add(d.resolve())
            loaded = load_run(d)
            (runs if isinstance(loaded, Run) else excluded).append(loaded)
            if not isinstance(loaded, Run) and ": FAILED (" in loaded and (run := failed_run(d)) is not None:
                failed.append(run)
    return LoadResult(runs, missing, excluded, failed)
