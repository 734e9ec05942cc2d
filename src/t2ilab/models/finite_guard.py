"""The divergence guard: a NaN/inf loss stops training with advice naming the newest healthy
checkpoint (models/health.py).

Plain mode reads the loss's finiteness on the host every step (before backward: the bad update is
never applied). ``sync_free`` mode (``perf.sync_free_guard``, the CUDA default) costs no host sync:
the flag is copied to pinned host memory without blocking and read at the *next* check, when the
GPU is long past it; a non-finite loss then stops training one update late.
"""

from __future__ import annotations

from typing import Any

import torch


class NonFiniteLossError(RuntimeError):
    """A loss became NaN/inf: training stops (before the bad update, or one step late when sync-free)."""


class FiniteGuard:
    def __init__(self) -> None:
        self._pending: tuple[torch.Tensor, Any, int] | None = None

    def check(self, loss: torch.Tensor, name: str, step: int, sync_free: bool, trainer: Any = None) -> torch.Tensor:
        if not sync_free:
            if not bool(torch.isfinite(loss.detach()).all()):
                _raise(name, step, loss.detach().float().flatten()[0].item(), trainer)
            return loss
        pending, self._pending = self._pending, None
        if pending is not None:
            flag, event, at = pending
            if event is not None:
                event.synchronize()  # that loss was computed a whole step ago: no pipeline drain
            if not bool(flag):
                _raise(name, at, float("nan"), trainer, late=True)
        finite = torch.isfinite(loss.detach()).all()
        event = None
        if finite.is_cuda:
            host = torch.empty((), dtype=torch.bool, pin_memory=True)
            host.copy_(finite, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        else:
            host = finite.clone()
        host.t2ilab_host_copy = True  # read next step on the host by design (the no-sync test allows it)
        self._pending = (host, event, step)
        return loss


def _raise(name: str, step: int, value: float, trainer: Any, late: bool = False) -> None:
    from t2ilab.models.health import advice

    when = ("detected one step later (perf.sync_free_guard): that update was applied"
            if late else "training stopped before the update")
    raise NonFiniteLossError(f"non-finite {name} ({value}) at global step {step}: {when}; {advice(trainer)}")
