"""EMA of a module's weights, kept as torch's AveragedModel (a library part, saved in checkpoints as
an ordinary submodule: ``ema.module.*`` and ``ema.n_averaged``) with the warm-up schedule of
diffusers/Karras: decay_t = min(decay, (1 + t) / (10 + t)), so short runs are not dominated by
the random init.

The update is our own because AveragedModel's reads ``n_averaged`` on the host every call
(``if self.n_averaged == 0`` and the decay from it): one device->host sync per training step on a
GPU. Here the count is mirrored in a Python int (read from the buffer once after construction or a
checkpoint load) and the update is one ``torch._foreach_lerp_`` over all floating tensors
(``foreach=False``: the per-tensor loop, kept only to measure what the fused path saves).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def ema_decay(decay: float, warmup: bool, count: int) -> float:
    """Decay of the update that follows ``count`` earlier updates (the first update copies)."""
    if count == 0:
        return 0.0
    return min(decay, (1.0 + count) / (10.0 + count)) if warmup else decay


class EMA(AveragedModel):
    """Exponential moving average of ``module``.

    Args:
        module: the module to average (copied at construction).
        decay: target decay (e.g. 0.999).
        warmup: ramp the decay up from 0.1 as (1+t)/(10+t).
        use_buffers: average buffers too (BatchNorm statistics), instead of leaving them at init.
        foreach: one fused ``_foreach_lerp_`` per update (default) instead of a per-tensor loop.
    """

    def __init__(self, module: nn.Module, decay: float = 0.999, warmup: bool = True, use_buffers: bool = True,
                 foreach: bool = True):
        super().__init__(module, use_buffers=use_buffers)
        self.decay, self.warmup, self.foreach = float(decay), bool(warmup), bool(foreach)
        self._count: int | None = None  # host mirror of n_averaged; None = read it at the next update
        for p in self.parameters():
            p.requires_grad_(False)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._count = None  # a checkpoint brought its own n_averaged

    def _pairs(self, model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        dst, src = list(self.module.parameters()), list(model.parameters())
        if self.use_buffers:
            dst, src = dst + list(self.module.buffers()), src + list(model.buffers())
        return dst, src

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        if self._count is None:
            self._count = int(self.n_averaged)  # once per construction / load, not per step
        weight = 1.0 - ema_decay(self.decay, self.warmup, self._count)
        dst, src = self._pairs(model)
        floats = [(e, p.detach().to(e.device)) for e, p in zip(dst, src) if e.is_floating_point()]
        for e, p in zip(dst, src):
            if not e.is_floating_point():  # integer buffers (e.g. BatchNorm's num_batches_tracked): copy
                e.copy_(p)
        if floats and self.foreach:
            torch._foreach_lerp_([e for e, _ in floats], [p for _, p in floats], weight)
        else:
            for e, p in floats:
                e.lerp_(p, weight)
        self.n_averaged += 1
        self._count += 1
