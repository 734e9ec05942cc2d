"""The denoiser of the VAE's learned latent prior (models/latent_prior.py): a residual MLP over a vector
latent, told the noise level and the caption.

Each block is pre-norm (LayerNorm), modulated by the summed time + caption embedding (scale, shift, as
the AdaGN of the image nets), and starts as the identity (zero-initialised output layer)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from t2ilab.nets.layers import CondMLP, sinusoidal_embedding


class _Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.emb = nn.Linear(width, 2 * width)
        self.fc1, self.fc2 = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.emb(F.silu(emb)).chunk(2, dim=1)
        return h + self.fc2(F.silu(self.fc1(self.norm(h) * (1 + scale) + shift)))


class LatentDenoiser(nn.Module):
    """``forward(u, t, cond)``: u (N, z_dim) noised latent, t (N,) training timesteps, cond (N, cond_dim)
    prepared captions -> (N, z_dim) prediction (epsilon or v, as the prior was trained)."""

    def __init__(self, z_dim: int, cond_dim: int, width: int = 512, depth: int = 4):
        super().__init__()
        self.width = int(width)
        self.inp = nn.Linear(z_dim, self.width)
        self.time = nn.Sequential(nn.Linear(self.width, self.width), nn.SiLU(), nn.Linear(self.width, self.width))
        self.cond = CondMLP(cond_dim, self.width)
        self.blocks = nn.ModuleList(_Block(self.width) for _ in range(int(depth)))
        self.out = nn.Sequential(nn.LayerNorm(self.width), nn.SiLU(), nn.Linear(self.width, z_dim))

    def forward(self, u: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        emb = self.time(sinusoidal_embedding(t, self.width)) + self.cond(cond)
        h = self.inp(u)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)
