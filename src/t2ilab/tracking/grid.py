"""Captioned image grids (one row per prompt, the prompt written to the left) as PIL images, and
where a grid of a sample folder goes: BESIDE it (``<folder>_grid.png``), never inside, so the
folder stays a plain image folder for FID tools."""

from __future__ import annotations

import logging
import os
import textwrap
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image, ImageDraw

from t2ilab.evaluation.images import to_uint8
from t2ilab.tracking.fonts import caption_font

log = logging.getLogger(__name__)

MAX_GRID_PROMPTS = 32  # rows of a sample folder's grid (the folder itself has every image)


def write_grid(images: torch.Tensor, prompts: Sequence[str], num_per_prompt: int,
               path: str | os.PathLike, max_prompts: int | None = None) -> Image.Image:
    """Save the captioned grid of ``images`` (prompt-major, [0,1] float or uint8) as PNG; returns it.

    Args:
        images: (P*k, C, H, W).
        prompts: the P prompts.
        num_per_prompt: k.
        path: destination PNG.
        max_prompts: draw only the first this many prompts (None = all).
    """
    if max_prompts is not None and len(prompts) > max_prompts:
        log.info("grid %s shows the first %d of %d prompts", path, max_prompts, len(prompts))
        prompts, images = list(prompts)[:max_prompts], images[: max_prompts * num_per_prompt]
    grid = captioned_grid(images, prompts, num_per_prompt)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return grid


def captioned_grid(images: torch.Tensor, prompts: Sequence[str], num_per_prompt: int, scale: int = 2,
                   label_width: int = 200, pad: int = 2) -> Image.Image:
    """images: (P*k, C, H, W) in [0,1], prompt-major (k consecutive images per prompt)."""
    if images.shape[0] != len(prompts) * num_per_prompt:
        raise ValueError(f"{images.shape[0]} images for {len(prompts)} prompts x {num_per_prompt}")
    u8 = to_uint8(images).cpu()
    if u8.shape[1] == 1:
        u8 = u8.expand(-1, 3, -1, -1)
    h, w = u8.shape[2] * scale, u8.shape[3] * scale
    font = caption_font("".join(prompts), size=10)  # one that draws every character of the prompts
    line_h = 11
    row_h = max(h, line_h * 3) + pad
    canvas = Image.new("RGB", (label_width + num_per_prompt * (w + pad) + pad, len(prompts) * row_h + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for i, prompt in enumerate(prompts):
        y = pad + i * row_h
        lines = textwrap.wrap(prompt, width=max(8, label_width // 6))[: max(1, row_h // line_h)]
        for j, line in enumerate(lines):
            draw.text((pad, y + j * line_h), line, fill="black", font=font)
        for j in range(num_per_prompt):
            tile = Image.fromarray(u8[i * num_per_prompt + j].permute(1, 2, 0).numpy()).resize((w, h), Image.NEAREST)
            canvas.paste(tile, (label_width + pad + j * (w + pad), y))
    return canvas
