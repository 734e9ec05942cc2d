"""What ``t2ilab.edit`` writes into ``out_dir``: ``<stem>_src.png`` (the source as the model saw it:
resized / converted) beside ``<stem>_edit.png``, ``edits.jsonl`` (one row per image: files, prompts,
strength, seed, sampling, notes, per-image metrics), ``edits_grid.png`` (captioned before/after
rows, tracking/grid.py) and ``metrics.json``; plus a before/after ``wandb.Table`` and the summary
for the configured loggers.

``out_dir`` is checked before any work: an existing folder with files is refused unless
``overwrite=true`` (then only files this writer owns are replaced; earlier ``*_edit.png`` /
``*_src.png`` are removed so no stale pair survives), and it may never be the input folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from t2ilab.evaluation.images import save_png, to_uint8
from t2ilab.utils.io import atomic_write

INDEX, GRID, METRICS = "edits.jsonl", "edits_grid.png", "metrics.json"
PREFIX = "edit/"


def owned(p: Path) -> bool:
    """Files a previous edit run wrote into an out_dir (what ``overwrite=true`` replaces)."""
    return p.name in (INDEX, GRID, METRICS) or p.name.endswith(("_edit.png", "_src.png"))


def prepare_out_dir(out_dir: str | os.PathLike, overwrite: bool, inputs: str | os.PathLike) -> Path:
    """The writable, checked out_dir (see the module docstring); nothing is written or removed on error."""
    from t2ilab.utils.io import claim_out_dir

    p = Path(str(out_dir)).expanduser()
    src = Path(str(inputs)).expanduser()
    src_dir = src if src.is_dir() else src.parent
    if p.resolve() == src_dir.resolve():
        raise ValueError(f"out_dir={p} is the input folder; choose another out_dir (edits are written beside copies "
                         "of their sources, <stem>_src.png / <stem>_edit.png)")
    return claim_out_dir(p, overwrite, lambda name: owned(p / name), what="an earlier edit's files")


def write_pairs(out_dir: Path, stems: Sequence[str], src_u8: torch.Tensor, edit_u8: torch.Tensor) -> None:
    """``<stem>_src.png`` and ``<stem>_edit.png`` for every image (uint8, gray PNG for 1 channel)."""
    for stem, a, b in zip(stems, src_u8.cpu(), edit_u8.cpu(), strict=True):
        save_png(a, out_dir / f"{stem}_src.png")
        save_png(b, out_dir / f"{stem}_edit.png")


def write_index(out_dir: Path, rows: Iterable[dict[str, Any]]) -> Path:
    return atomic_write(out_dir / INDEX, "".join(json.dumps(row, default=str) + "\n" for row in rows))


def grid_caption(stem: str, source: str | None, target: str) -> str:
    return f"{stem}: {source or '(no caption)'} -> {target}"


def write_edit_grid(out_dir: Path, src_u8: torch.Tensor, edit_u8: torch.Tensor, captions: Sequence[str]) -> Path:
    """Captioned grid, one row per image: source | edit (the first ``MAX_GRID_PROMPTS`` images)."""
    from t2ilab.tracking.grid import MAX_GRID_PROMPTS, write_grid

    pairs = torch.stack([src_u8.cpu(), edit_u8.cpu()], dim=1).flatten(0, 1)  # src0, edit0, src1, ...
    path = out_dir / GRID
    write_grid(pairs, list(captions), 2, path, max_prompts=MAX_GRID_PROMPTS)
    return path


def write_metrics(out_dir: Path, result: dict[str, Any]) -> Path:
    from t2ilab.evaluation.results import write_metrics_json

    return write_metrics_json(result, out_dir)


def report(loggers: Sequence[Any], result: dict[str, Any], rows: Sequence[dict[str, Any]], src_u8: torch.Tensor,
           edit_u8: torch.Tensor, table_size: int = 64) -> None:
    """Summary metrics to every logger; W&B also gets the before/after table (first ``table_size`` rows)."""
    from t2ilab.evaluation.results import log_summary

    for run in log_summary(result, loggers, PREFIX):
        run.log({PREFIX + "pairs": pair_table(rows[:table_size], src_u8, edit_u8)})


def pair_table(rows: Sequence[dict[str, Any]], src_u8: torch.Tensor, edit_u8: torch.Tensor) -> Any:
    """wandb.Table(file, source, edit, source_prompt, target_prompt, strength, <per-image metrics>)."""
    import wandb

    keys = sorted({k for r in rows for k in r["metrics"]})
    table = wandb.Table(columns=["file", "source", "edit", "source_prompt", "target_prompt", "strength", *keys])

    def image(t: torch.Tensor, caption: str) -> Any:
        arr = to_uint8(t).permute(1, 2, 0).numpy()
        return wandb.Image(arr[..., 0] if arr.shape[-1] == 1 else arr, caption=caption)

    for r, a, b in zip(rows, src_u8.cpu(), edit_u8.cpu()):
        table.add_data(r["source_file"], image(a, r["source_prompt"] or ""), image(b, r["target_prompt"]),
                       r["source_prompt"], r["target_prompt"], r["strength"], *[r["metrics"].get(k) for k in keys])
    return table
