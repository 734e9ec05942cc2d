"""Find t2ilab run dirs under the given paths and load what a report needs from each.

A run's config is its manifest's resolved config, flattened to dotted keys, plus Hydra's group
choices (``model``, ``logger``, ``experiment``, ... from ``.hydra/hydra.yaml``) as keys of their own.
A run dir is a directory holding ``manifest.json`` (written by ``t2ilab.train`` / ``t2ilab.eval``);
a path may be a run dir or any directory with run dirs below it (a Hydra multirun/sweep dir, a
folder of sweeps). Only finished runs (``COMPLETE`` marker) are used; every other one is listed
with the reason it was left out.

Final metrics, lowest to highest precedence: the newest ``metrics.json`` (evaluation; keys get the
``eval/`` prefix the W&B logging uses), Lightning's ``metrics.csv`` (``logger=csv``), the W&B run
summary (offline or online run folder under ``<run_dir>/wandb``). Bookkeeping values (``_*``,
``epoch``, ``trainer/global_step``, ``lr-*`` from the LR monitor, image/media fields) are not
metrics; ``--metric lr-AdamW`` still asks for an LR explicitly.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from t2ilab.tracking.run_status import status_of
from t2ilab.utils.config import flatten

SKIP_DIRS = {"wandb", "checkpoints", ".hydra", "__pycache__"}  # never hold run dirs
BOOKKEEPING = {"epoch", "trainer/global_step"}
EVAL_PREFIX = "eval/"  # t2ilab.evaluation.reporting.PREFIX (not imported: that pulls in torch)

History = dict[str, list[tuple[float, float]]]


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


@dataclass
class LoadResult:
    """Usable runs, plus "path: why" lines for missing paths and for runs left out."""

    runs: list[Run]
    missing: list[str]
    excluded: list[str]


def _number(v: Any) -> float | None:
    """A finite float, or None for anything else (bools, strings, NaN, dicts)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(float(v)) else None


def is_bookkeeping(key: str) -> bool:
    """Keys that are logged alongside metrics but are not results."""
    return key.startswith("_") or key in BOOKKEEPING or key.startswith("lr-") or "/_" in key


def _natural(p: Path) -> list[Any]:
    """Sort key: numbers inside names compare as numbers (sweep/10 after sweep/9)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(p))]


def find_run_dirs(root: Path) -> list[Path]:
    """``root`` if it is a run dir, else every run dir below it (not descending into run dirs)."""
    if (root / "manifest.json").is_file():
        return [root]
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        if "manifest.json" in filenames:
            found.append(Path(dirpath))
            dirnames[:] = []
        else:
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
    return sorted(found, key=_natural)


def _wandb(run_dir: Path) -> tuple[dict[str, float], History]:
    """Summary numbers and history of the run's W&B run folders (a resume may add folders)."""
    from t2ilab.compat.wandb import run_dir_runs

    summary: dict[str, Any] = {}
    history: History = {}
    for logged in run_dir_runs(run_dir):  # oldest first
        summary.update(logged["summary"])
        for row in logged["history"]:
            x = _number(row.get("trainer/global_step", row.get("_step")))
            for k, v in row.items():
                if (y := _number(v)) is not None and x is not None and not is_bookkeeping(k):
                    history.setdefault(k, []).append((x, y))
    media = tuple(k[: -len("_type")] for k in summary if k.endswith("/_type"))  # "samples/grid/", ...
    final = {k: y for k, v in summary.items()
             if (y := _number(v)) is not None and not is_bookkeeping(k) and not k.startswith(media)}
    return final, {k: v for k, v in history.items() if not k.startswith(media)}


def _metrics_csv(run_dir: Path) -> tuple[dict[str, float], History]:
    """Last value and history of every column of Lightning CSVLogger files (oldest version first)."""
    final: dict[str, float] = {}
    history: History = {}
    files = [p for p in run_dir.rglob("metrics.csv") if "wandb" not in p.relative_to(run_dir).parts]
    for path in sorted(files, key=_natural):
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                x = _parse(row.get("step"))
                for k, v in row.items():
                    if k is None or is_bookkeeping(k) or k == "step" or (y := _parse(v)) is None:
                        continue
                    final[k] = y
                    if x is not None:
                        history.setdefault(k, []).append((x, y))
    return final, history


def _parse(text: str | None) -> float | None:
    try:
        return _number(float(text)) if text not in (None, "") else None
    except ValueError:
        return None


def _metrics_json(run_dir: Path) -> tuple[dict[str, float], History]:
    """Metrics of the newest ``metrics.json`` (by step, then time) and one history point per file."""
    files = [p for p in run_dir.rglob("metrics.json") if "wandb" not in p.relative_to(run_dir).parts]
    loaded = []
    for p in files:
        try:
            payload = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(payload, dict):
            loaded.append((_number(payload.get("step")), p.stat().st_mtime, payload))
    loaded.sort(key=lambda t: (-1.0 if t[0] is None else t[0], t[1]))
    final: dict[str, float] = {}
    history: History = {}
    for step, _, payload in loaded:
        values = {EVAL_PREFIX + k: y for k, v in payload.items() if k != "step" and (y := _number(v)) is not None}
        final = values
        for k, y in values.items():
            if step is not None:
                history.setdefault(k, []).append((step, y))
    return final, history


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


def _merge_history(*sources: History) -> History:
    """Per metric, the first source that has it; points sorted by step, the last value per step kept."""
    out: History = {}
    for src in sources:
        for k, points in src.items():
            if k not in out:
                out[k] = sorted(dict(points).items())
    return out


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
    j_final, j_hist = _metrics_json(run_dir)
    c_final, c_hist = _metrics_csv(run_dir)
    try:
        w_final, w_hist = _wandb(run_dir)
    except Exception as e:  # noqa: BLE001 - a corrupt W&B log must not hide the other sources
        return f"{run_dir}: unreadable W&B run ({type(e).__name__}: {e})"
    final = {**j_final, **c_final, **w_final}
    if not final:
        return f"{run_dir}: no final metrics (no W&B summary values, metrics.json or metrics.csv)"
    seed = manifest.get("seed", config.get("seed"))
    return Run(run_dir, {**choices, **config}, seed, final, _merge_history(w_hist, c_hist, j_hist),
               sample_grid(run_dir), choices)


def _looks_like_wandb_project(text: str) -> bool:
    return re.fullmatch(r"[\w.-]+/[\w.-]+", text) is not None


def collect_runs(paths: list[str | os.PathLike]) -> LoadResult:
    """Load every run dir under ``paths``; nonexistent paths and unusable runs are reported, not raised."""
    runs: list[Run] = []
    missing: list[str] = []
    excluded: list[str] = []
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
        dirs = find_run_dirs(root)
        if not dirs:
            excluded.append(f"{raw}: no manifest.json (not a t2ilab run dir, and no run dirs below it)")
        for d in dirs:
            if d.resolve() in seen:
                continue
            seen.add(d.resolve())
            loaded = load_run(d)
            (runs if isinstance(loaded, Run) else excluded).append(loaded)
    return LoadResult(runs, missing, excluded)
