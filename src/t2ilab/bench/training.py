"""Training throughput of a family through the real path (Lightning ``Trainer.fit`` on the real
datamodule, fast paths applied by ``utils.fast_paths``), timed after warm-up steps."""

from __future__ import annotations

import tempfile
import time
from typing import Any

import lightning as L
import torch
from t2ilab.compat.hydra import instantiate

from t2ilab.bench.common import peak_memory_mb, reset_peak_memory, sync
from t2ilab.utils import fast_paths
from t2ilab.utils.builders import build_datamodule, build_model


class _StepTimer(L.Callback):
    """Times batches ``warmup .. warmup + steps - 1`` (device drained at both ends)."""

    def __init__(self, warmup: int, steps: int, device: torch.device):
        self.warmup, self.steps, self.device = warmup, steps, device
        self.seen, self.t0, self.seconds, self.peak_mb = 0, 0.0, float("nan"), float("nan")

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
        if self.seen == self.warmup:
            sync(self.device)
            reset_peak_memory(self.device)
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.seen += 1
        if self.seen == self.warmup + self.steps:
            sync(self.device)
            self.seconds = time.perf_counter() - self.t0
            self.peak_mb = peak_memory_mb(self.device)


def measure_training(cfg: Any, encoder: Any, device: torch.device, perf: dict[str, Any], precision: str,
                     warmup: int, steps: int, datamodule: Any = None) -> dict[str, Any]:
    """images/s, seconds/step and peak memory of ``steps`` timed training batches.

    Args:
        cfg: composed train config (its ``model``, ``data`` and ``trainer``).
        encoder: the (shared) text encoder.
        device: where to train.
        perf: ``perf`` options (resolved for ``device``; fallbacks are returned under ``fallbacks``).
        precision: Lightning precision (``32-true``, ``bf16-mixed``).
        warmup: untimed batches first (compilation, allocator, caches).
        steps: timed batches.
        datamodule: reuse a built datamodule (its data and embedding table) across variants.
    """
    choices, notes = fast_paths.resolve(perf, device)
    dm = datamodule or build_datamodule(cfg.data, encoder)
    model = build_model(cfg.model, encoder.dim, getattr(encoder, "token_dim", 0))
    fast_paths.apply(model, dm, choices, device)
    timer = _StepTimer(warmup, steps, device)
    with tempfile.TemporaryDirectory(prefix="t2ilab-bench-") as tmp:
        trainer = instantiate(cfg.trainer, accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                              num_nodes=1, precision=precision, max_steps=warmup + steps, max_epochs=-1,
                              logger=False, enable_checkpointing=False, enable_progress_bar=False,
                              enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                              default_root_dir=tmp, callbacks=[timer])
        trainer.fit(model, datamodule=dm)
    batch = int(cfg.data.batch_size)
    return {"images_per_second": batch * steps / timer.seconds, "seconds_per_step": timer.seconds / steps,
            "peak_memory_mb": timer.peak_mb, "batch_size": batch, "precision": precision, "perf": choices,
            "fallbacks": notes, "params_m": sum(p.numel() for p in model.compile_targets()[0].parameters()) / 1e6}


def diffusion_train_flops(model: Any, batch: int, device: torch.device) -> float | None:
    """FLOPs of one training forward + backward of the denoiser per image (torch's flop counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    net = model.net.to(device)
    x = torch.randn(batch, *model.image_shape, device=device)
    t = torch.randint(0, 1000, (batch,), device=device)
    cond = torch.randn(batch, model.cond_dim, device=device)
    try:
        with FlopCounterMode(display=False) as counter:
            net(x, t, cond).square().mean().backward()
    except Exception:  # noqa: BLE001 - an op without a flop formula: report no MFU rather than fail
        return None
    net.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch
