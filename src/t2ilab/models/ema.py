"""EMA of a module's weights, built on torch's AveragedModel (a library part, saved in checkpoints
as an ordinary submodule) with the warm-up schedule of diffusers/Karras:
decay_t = min(decay, (1 + t) / (10 + t)), so short runs are not dominated by the random init."""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def _ema_multi_avg_fn(decay: float, warmup: bool):
    @torch.no_grad()
    def fn(ema_params: list[torch.Tensor], params: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        t = float(num_averaged)
        d = min(decay, (1.0 + t) / (10.0 + t)) if warmup else decay
        if not ema_params:
            return
        if ema_params[0].is_floating_point():
            torch._foreach_lerp_(ema_params, params, 1.0 - d)
        else:  # integer buffers (e.g. BatchNorm's num_batches_tracked): copy
            for e, p in zip(ema_params, params):
                e.copy_(p)

    return fn


class EMA(AveragedModel):
    """Exponential moving average of ``module``.

    Args:
        module: the module to average (copied at construction).
        decay: target decay (e.g. 0.999).
        warmup: ramp the decay up from 0.1 as (1+t)/(10+t).
        use_buffers: average buffers too (BatchNorm statistics), instead of leaving them at init.
    """

    def __init__(self, module: nn.Module, decay: float = 0.999, warmup: bool = True, use_buffers: bool = True):
        super().__init__(module, multi_avg_fn=_ema_multi_avg_fn(decay, warmup), use_buffers=use_buffers)
        self.decay, self.warmup = decay, warmup
        for p in self.parameters():
            p.requires_grad_(False)
