"""Batched generation for a list of prompts with one seed per image (family-agnostic)."""

from __future__ import annotations

from typing import Any

import torch


def generate_images(model: Any, cond: torch.Tensor, num_per_prompt: int = 1, seed: int = 0,
                    batch_size: int = 64, **sampling: Any) -> tuple[torch.Tensor, list[int]]:
    """Images for every (prompt, j) pair, prompt-major, in [0,1] on the CPU, and their seeds.

    Image ``i`` is drawn with a CPU generator seeded ``seed + i``: the same seed gives the same
    image whatever the batch size or device (noise is drawn on the CPU, then moved).
    """
    if cond.ndim != 2 or cond.shape[0] == 0:
        raise ValueError(f"need a non-empty (P, D) batch of prompt embeddings, got {tuple(cond.shape)}")
    rows = cond.repeat_interleave(num_per_prompt, dim=0)
    seeds = [seed + i for i in range(rows.shape[0])]
    out = []
    for start in range(0, rows.shape[0], batch_size):
        gens = [torch.Generator().manual_seed(s) for s in seeds[start:start + batch_size]]
        out.append(model.generate(rows[start:start + batch_size], generator=gens, **sampling).cpu())
    return torch.cat(out), seeds
