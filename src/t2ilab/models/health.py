"""Is a checkpoint worth resuming from? Used by the divergence guard so that its advice ("resume
from <checkpoint> with a lower learning rate") never names a checkpoint that is itself diverged.

A loss turns NaN *after* the weights went bad: an infinite gradient (clipping turns it into NaN)
or an exploding update is applied at step k, ``last.ckpt`` of step k is written, and only the loss
of step k+1 is non-finite. So the guard checks the candidates newest first and names the newest
healthy one. Healthy = every floating tensor of the state dict (model and EMA) is finite and no
absolute value exceeds ``WEIGHT_LIMIT``: the weights (and EMA) of a working network here are
O(0.01-10); 1e4 is three orders outside that, and a run that got there overflows float32 within a
few more steps (measured: SGD at lr 30 / 3 / 1 on the tiny UNet of the tests went 6 -> 1.6e4 ->
5e16, 16 -> 2e5, 14 -> 6e4 in the last two checkpoints before the NaN).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

import torch

log = logging.getLogger(__name__)

WEIGHT_LIMIT = 1e4


def unhealthy_reason(state_dict: dict[str, Any], limit: float = WEIGHT_LIMIT) -> str | None:
    """None when every floating tensor is finite and within ``limit``; else what is wrong, naming the tensor."""
    for name, t in state_dict.items():
        if not torch.is_tensor(t) or not t.is_floating_point() or t.numel() == 0:
            continue
        t = t.detach().float()
        if not bool(torch.isfinite(t).all()):
            return f"non-finite values in {name}"
        peak = float(t.abs().max())
        if peak > limit:
            return f"exploding weights in {name} (|w| up to {peak:.3g} > {limit:g})"
    return None


def checkpoint_reason(path: str | Path) -> str | None:
    """``unhealthy_reason`` of a checkpoint file's state dict (unreadable files count as unhealthy)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file is not a resume target
        return f"unreadable ({type(e).__name__}: {e})"
    return unhealthy_reason(ckpt.get("state_dict", {}))


def candidates(last: str | None, dirpath: str | Path | None) -> list[Path]:
    """``last`` first, then the other checkpoints of ``dirpath`` newest first (by modification time)."""
    out: list[Path] = [Path(last)] if last else []
    if dirpath and Path(dirpath).is_dir():
        others = [p for p in Path(dirpath).glob("*.ckpt") if p not in out]
        out += sorted(others, key=lambda p: p.stat().st_mtime, reverse=True)
    return [p for p in out if p.is_file()]


def newest_healthy(paths: Iterable[Path]) -> tuple[Path | None, list[str]]:
    """The first healthy checkpoint of ``paths`` and, for the skipped newer ones, ``"name: reason"``."""
    skipped = []
    for p in paths:
        reason = checkpoint_reason(p)
        if reason is None:
            return p, skipped
        skipped.append(f"{p.name}: {reason}")
    return None, skipped


def advice(trainer: Any) -> str:
    """The guard's recovery advice for a trainer's checkpoints (see the module docstring)."""
    ck = getattr(trainer, "checkpoint_callback", None) if trainer is not None else None
    fresh = ("no checkpoint was saved yet: start again with a lower learning rate (e.g. a tenth: "
             "model.optimizer.lr=..., for the GAN model.optimizer_g.lr / optimizer_d.lr) or more warm-up "
             "(model.lr_warmup_steps)")
    if ck is None:
        return fresh
    paths = candidates(ck.last_model_path or ck.best_model_path or None, getattr(ck, "dirpath", None))
    good, skipped = newest_healthy(paths)
    bad = f"; do not resume from the diverged {', '.join(skipped)}" if skipped else ""
    if good is None:
        return ("no healthy checkpoint exists" + bad + "; start again with a lower learning rate"
                if paths else fresh)
    return (f"the last healthy checkpoint is {good} (resume with ckpt_path={good} and a lower "
            f"learning rate, e.g. a tenth: model.optimizer.lr=...){bad}")
