"""The side-by-side baseline: what a user writes with the obvious libraries — a plain PyTorch loop
around diffusers' ``UNet2DModel`` (caption embedding through a linear layer into its class-embedding
slot, ``class_embed_type="identity"``), diffusers' ``DDPMScheduler`` for noising and ``EMAModel``,
default AdamW, a standard DataLoader with per-item collate, gradient clipping as t2ilab's trainer
does — at the same parameter count (±10 %), resolution, batch, precision and data."""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def _unet(width: int, cfg_net: Any, image_size: int, channels: int, cond_dim: int) -> tuple[nn.Module, nn.Module]:
    from diffusers import UNet2DModel

    mult = list(cfg_net.channel_mult)
    res, down, up = image_size, [], []
    for level in range(len(mult)):
        down.append("AttnDownBlock2D" if res in list(cfg_net.attn_resolutions) else "DownBlock2D")
        res //= 2 if level < len(mult) - 1 else 1
    up = ["AttnUpBlock2D" if b.startswith("Attn") else "UpBlock2D" for b in reversed(down)]
    unet = UNet2DModel(sample_size=image_size, in_channels=channels, out_channels=channels,
                       block_out_channels=tuple(width * m for m in mult), layers_per_block=int(cfg_net.num_res_blocks),
                       down_block_types=tuple(down), up_block_types=tuple(up), norm_num_groups=4,
                       attention_head_dim=width // 4, class_embed_type="identity")
    return unet, nn.Linear(cond_dim, 4 * width)


def matched_unet(target_params: int, cfg_net: Any, image_size: int, channels: int,
                 cond_dim: int) -> tuple[nn.Module, nn.Module, int]:
    """A UNet2DModel (+ caption projection) whose parameter count is closest to ``target_params``
    over widths that are multiples of 4 (same levels, channel multipliers, blocks per level and
    attention resolutions as t2ilab's UNet config)."""
    best = None
    for width in range(8, 513, 4):
        unet, proj = _unet(width, cfg_net, image_size, channels, cond_dim)
        n = sum(p.numel() for m in (unet, proj) for p in m.parameters())
        if best is None or abs(n - target_params) < abs(best[2] - target_params):
            best = (unet, proj, n)
        if n > target_params * 1.5:
            break
    return best


def measure_baseline(cfg: Any, datamodule: Any, target_params: int, device: torch.device, bf16: bool,
                     warmup: int, steps: int) -> dict[str, Any]:
    """images/s of the plain diffusers loop (see the module docstring)."""
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    from t2ilab.bench.common import sync

    unet, proj, n = matched_unet(target_params, cfg.model.net, int(cfg.data.image_size), int(cfg.data.channels),
                                 int(datamodule.embedding_table().shape[1]))
    unet, proj = unet.to(device).train(), proj.to(device)
    params = list(unet.parameters()) + list(proj.parameters())
    opt = torch.optim.AdamW(params, lr=2e-4)
    ema = EMAModel(params, decay=0.999)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    saved, datamodule.batches_on = datamodule.batches_on, None  # the standard per-item DataLoader path
    try:
        loader = datamodule.train_dataloader()
    finally:
        datamodule.batches_on = saved
    seen, t0 = 0, 0.0
    while seen < warmup + steps:
        for batch in loader:
            if seen == warmup:
                sync(device)
                t0 = time.perf_counter()
            x, cond = batch["image"].to(device), batch["cond"].to(device)
            noise = torch.randn_like(x)
            t = torch.randint(0, 1000, (x.shape[0],), device=device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                pred = unet(sched.add_noise(x, noise, t), t, class_labels=proj(cond)).sample
                loss = F.mse_loss(pred.float(), noise)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            ema.step(params)
            seen += 1
            if seen == warmup + steps:
                break
    sync(device)
    seconds = time.perf_counter() - t0
    batch_size = int(cfg.data.batch_size)
    return {"images_per_second": batch_size * steps / seconds, "seconds_per_step": seconds / steps,
            "params_m": n / 1e6, "target_params_m": target_params / 1e6, "param_ratio": n / target_params,
            "block_out_channels": list(unet.config.block_out_channels), "batch_size": batch_size,
            "precision": "bf16-mixed" if bf16 else "32-true"}
