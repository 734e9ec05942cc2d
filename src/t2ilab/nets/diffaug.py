"""Differentiable augmentation (DiffAugment, Zhao et al. 2020), written by hand: the reference code
is a single research script, not a maintained package (kornia would add a dependency for three ops).

The same random ops are applied to real and fake images before the discriminator (each image
draws its own parameters); gradients flow through them to the generator, so D never sees
un-augmented images and G is not pushed to generate augmented ones. Images are in [-1,1].
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def rand_color(x: torch.Tensor) -> torch.Tensor:
    """Brightness (+-0.5), saturation (x0..2 around the pixel's channel mean), contrast (x0.5..1.5)."""
    n = x.shape[0]
    x = x + (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean


def rand_translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its side (integer pixels), zero-filling the border."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (n, 1, 1), device=x.device)
    tx = torch.randint(-sw, sw + 1, (n, 1, 1), device=x.device)
    gb, gy, gx = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(h, device=x.device),
                                torch.arange(w, device=x.device), indexing="ij")
    gy = (gy + ty + 1).clamp(0, h + 1)  # index into the 1-pixel zero-padded image
    gx = (gx + tx + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)
    return padded[gb, gy, gx].permute(0, 3, 1, 2).contiguous()


def rand_cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero a random square of ``ratio`` x the side per image."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device)
    gb, gy, gx = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(ch, device=x.device),
                                torch.arange(cw, device=x.device), indexing="ij")
    gy = (gy + oy - ch // 2).clamp(0, h - 1)
    gx = (gx + ox - cw // 2).clamp(0, w - 1)
    mask = torch.ones(n, h, w, device=x.device, dtype=x.dtype)
    mask[gb, gy, gx] = 0
    return x * mask.unsqueeze(1)


OPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "color": rand_color, "translation": rand_translation, "cutout": rand_cutout,
}


def parse_policy(policy: str | None) -> tuple[str, ...]:
    """"color,translation,cutout" -> ("color", "translation", "cutout"); "" / None -> ()."""
    names = tuple(p.strip() for p in (policy or "").split(",") if p.strip())
    bad = [p for p in names if p not in OPS]
    if bad:
        raise ValueError(f"unknown DiffAugment ops {bad}; choose from {sorted(OPS)} (comma-separated)")
    return names


def diff_augment(x: torch.Tensor, policy: str | tuple[str, ...] = "color,translation,cutout") -> torch.Tensor:
    """Apply the ops of ``policy`` in order; shape and dtype are kept, gradients flow to ``x``."""
    for name in parse_policy(policy) if isinstance(policy, str) else policy:
        x = OPS[name](x)
    return x
