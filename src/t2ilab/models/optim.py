"""Optimisation helpers of the shared base: the learning-rate schedule (linear warm-up, then
constant or cosine decay) and gradient clipping for optimisers that unscale internally."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from t2ilab.choices import LR_DECAYS  # noqa: E402,F401  (one source of the choices)


def lr_factor(warmup_steps: int, decay: str, min_ratio: float, total_steps: int) -> Callable[[int], float]:
    """Learning-rate factor per optimiser step: linear warm-up over ``warmup_steps``, then constant
    (``decay="none"``) or a half-cosine down to ``min_ratio`` at ``total_steps`` (``cosine``; constant
    when ``total_steps`` is unknown, <= 0)."""
    n = max(int(warmup_steps), 0)

    def factor(step: int) -> float:
        if n and step < n:
            return (step + 1) / n
        if decay != "cosine" or total_steps <= n:
            return 1.0
        frac = min(1.0, (step - n) / max(1, total_steps - n))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * frac))

    return factor


def clip_directly(optimizer: Any, value: float, algorithm: str | None) -> None:
    """Clip the gradients of ``optimizer``'s parameters in place (norm, or ``value``)."""
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if algorithm == "value":
        torch.nn.utils.clip_grad_value_(params, float(value))
    else:
        torch.nn.utils.clip_grad_norm_(params, float(value))
