"""A compact text-conditioned UNet denoiser: (x_t, t, cond) -> prediction of x_t's shape.

The noise level enters through a sinusoidal embedding, the caption through ``CondMLP``; their sum
modulates every residual block (AdaGN). Self-attention runs at the resolutions listed in
``attn_resolutions`` (low ones: cheap and where global layout is decided).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from t2ilab.nets.layers import CondMLP, ResBlock, SelfAttention, group_norm, sinusoidal_embedding


class UNet(nn.Module):
    """Args:
        channels: image channels in and out.
        cond_dim: text-embedding size.
        image_size: input side length (must be divisible by 2**(len(channel_mult)-1)).
        base_channels: width of the first level.
        channel_mult: width multiplier per level (one level per entry; each after the first halves the size).
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attn_resolutions: feature-map sizes that get self-attention.
        heads: attention heads.
        dropout: dropout inside residual blocks.
        patch_size: fold p x p pixel patches into channels before the first conv (PixelUnshuffle)
            and unfold at the end: the network runs at image_size/p, ~p^2 cheaper (used by the
            CPU quickstart; 1 = plain pixel-space UNet).
    """

    def __init__(self, channels: int = 3, cond_dim: int = 512, image_size: int = 32, base_channels: int = 64,
                 channel_mult: Sequence[int] = (1, 2, 2), num_res_blocks: int = 2,
                 attn_resolutions: Sequence[int] = (8,), heads: int = 4, dropout: float = 0.0, patch_size: int = 1):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not divisible by patch_size {patch_size}")
        self.patch_size = patch_size
        channels, image_size = channels * patch_size**2, image_size // patch_size
        if image_size % 2 ** (len(channel_mult) - 1):
            raise ValueError(f"image_size {image_size} is not divisible by 2**{len(channel_mult) - 1} "
                             f"(set model.net.channel_mult to fewer levels)")
        emb_dim = 4 * base_channels
        self.base_channels = base_channels
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.cond_mlp = CondMLP(cond_dim, emb_dim)
        self.stem = nn.Conv2d(channels, base_channels, 3, padding=1)

        self.down, skips, ch, res = nn.ModuleList(), [base_channels], base_channels, image_size
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                block = nn.ModuleList([ResBlock(ch, base_channels * mult, emb_dim, dropout)])
                ch = base_channels * mult
                if res in attn_resolutions:
                    block.append(SelfAttention(ch, heads))
                self.down.append(block)
                skips.append(ch)
            if level < len(channel_mult) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(ch, ch, 3, stride=2, padding=1)]))
                skips.append(ch)
                res //= 2
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_dim, dropout), SelfAttention(ch, heads),
                                  ResBlock(ch, ch, emb_dim, dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                block = nn.ModuleList([ResBlock(ch + skips.pop(), base_channels * mult, emb_dim, dropout)])
                ch = base_channels * mult
                if res in attn_resolutions:
                    block.append(SelfAttention(ch, heads))
                if level > 0 and i == num_res_blocks:
                    block.append(nn.Upsample(scale_factor=2, mode="nearest"))
                    block.append(nn.Conv2d(ch, ch, 3, padding=1))
                    res *= 2
                self.up.append(block)
        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), nn.Conv2d(ch, channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    @staticmethod
    def _run(block: nn.ModuleList, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in block:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        return h

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x: (N,C,H,W) noisy images; t: (N,) timesteps (any scale); cond: (N,cond_dim)."""
        emb = self.time_mlp(sinusoidal_embedding(t, self.base_channels)) + self.cond_mlp(cond)
        if self.patch_size > 1:
            x = F.pixel_unshuffle(x, self.patch_size)
        h = self.stem(x)
        hs = [h]
        for block in self.down:
            h = self._run(block, h, emb)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        for block in self.up:
            h = self._run(block, torch.cat([h, hs.pop()], dim=1), emb)
        out = self.out(h)
        return F.pixel_shuffle(out, self.patch_size) if self.patch_size > 1 else out
