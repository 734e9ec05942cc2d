"""The one reader of a run dir's metrics, used by ``t2ilab.report``, ``t2ilab.reproduce`` and anything else
that asks "what did this run measure?".

Sources, lowest to highest precedence — the run dir's own files win, W&B is an optional extra:
the W&B run summary and history (offline or online run folders under ``<run_dir>/wandb``, read through
``compat/wandb.py``; an unreadable W&B log is noted, never fatal), Lightning's ``metrics.csv``
(``logger=csv``), the newest ``metrics.json`` (evaluation; keys get the ``eval/`` prefix the W&B logging
uses, so both name a metric the same way). Bookkeeping values (``_*``, ``epoch``, ``trainer/global_step``,
``lr-*`` from the LR monitor, image/media fields) are not metrics.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BOOKKEEPING = {"epoch", "trainer/global_step"}
EVAL_PREFIX = "eval/"  # t2ilab.evaluation.results.PREFIX (not imported: that pulls in torch)

History = dict[str, list[tuple[float, float]]]


@dataclass
class RunMetrics:
    """Final value per metric, its history ``[(step, value), ...]``, and notes on sources that could not be read."""

    final: dict[str, float]
    history: History = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def read_metrics(run_dir: str | Path) -> RunMetrics:
    """Every metric a run dir holds (see the module docstring for the sources and their precedence)."""
    run_dir = Path(run_dir)
    notes: list[str] = []
    j_final, j_hist = _metrics_json(run_dir)
    c_final, c_hist = _metrics_csv(run_dir)
    try:
        w_final, w_hist = _wandb(run_dir)
    except Exception as e:  # noqa: BLE001 - a corrupt W&B log must not hide the other sources
        w_final, w_hist = {}, {}
        notes.append(f"unreadable W&B run ({type(e).__name__}: {e})")
    return RunMetrics({**w_final, **c_final, **j_final}, _merge_history(j_hist, c_hist, w_hist), notes)


def _natural(p: Path) -> list[Any]:
    """Sort key: numbers inside names compare as numbers (version_10 after version_9)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(p))]


def _number(v: Any) -> float | None:
    """A finite float, or None for anything else (bools, strings, NaN, dicts)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(float(v)) else None


def is_bookkeeping(key: str) -> bool:
    """Keys that are logged alongside metrics but are not results."""
    return key.startswith("_") or key in BOOKKEEPING or key.startswith("lr-") or "/_" in key


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


def _merge_history(*sources: History) -> History:
    """Per metric, the first source that has it; points sorted by step, the last value per step kept."""
    out: History = {}
    for src in sources:
        for k, points in src.items():
            if k not in out:
                out[k] = sorted(dict(points).items())
    return out
