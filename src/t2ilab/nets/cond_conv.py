"""Caption-conditioned convolutional stacks shared by the GAN generator and the VAE (plain nn.Modules).

Both stacks reuse the UNet's AdaGN ``ResBlock`` (``nets/layers.py``): every block's second
GroupNorm is scaled/shifted by an embedding of the caption (+ noise). GroupNorm instead of
BatchNorm keeps each sample independent of the rest of its batch (per-sample seeds give the same
image whatever the batch) and leaves no running statistics for the EMA copy to track.

Resolutions are derived from ``image_size`` (``stage_plan``): halve while the side stays even and
>= ``min_size``, so 32 px -> 4,8,16,32; 64 px -> 4..64; 28 px -> 7,14,28; 16 px -> 4,8,16.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from t2ilab.choices import UPSAMPLE_MODES
from t2ilab.nets.layers import CondMLP, ResBlock, group_norm
from t2ilab.utils.typecheck import OneOf


def stage_plan(image_size: int, min_size: int = 4) -> list[int]:
    """Feature-map sides from the smallest to ``image_size`` (each twice the previous)."""
    if image_size < min_size:
        raise ValueError(f"image_size {image_size} is smaller than the smallest feature map ({min_size})")
    sizes = [int(image_size)]
    while sizes[0] % 2 == 0 and sizes[0] // 2 >= min_size:
        sizes.insert(0, sizes[0] // 2)
    return sizes


def stage_width(size: int, image_size: int, base_channels: int, max_channels: int) -> int:
    """Channels at a feature map of side ``size``: ``base_channels`` at full resolution, doubled per
    halving, capped at ``max_channels`` (cheap at high resolution, wide where the map is small)."""
    return min(int(max_channels), int(base_channels) * (image_size // size))


class CondUpNet(nn.Module):
    """(z, caption) -> image: z -> smallest map (linear), then per stage nearest-upsample + AdaGN
    ResBlocks whose modulation is ``CondMLP(caption) + Linear(z)`` (DF-GAN/StyleGAN-like fusion
    at every resolution, so the caption steers colour/shape at all scales).

    Args:
        channels: output image channels.
        cond_dim: caption-embedding size.
        image_size: output side (see ``stage_plan``).
        z_dim: latent / noise size.
        base_channels: width at full resolution (doubles per halving).
        max_channels: width cap.
        emb_dim: size of the modulation embedding.
        num_res_blocks: AdaGN ResBlocks per resolution.
        cond_input: also feed the caption embedding into the first linear layer (the smallest map
            is then a function of (z, caption), not z alone): modulation is channel-wise, so
            without it the caption reaches the spatial layout only indirectly.
        identity_init: start every ResBlock as the identity (zero last conv, as in the UNet); False
            re-initialises those convs with PyTorch's default init.
        upsample: ``nearest`` (each pixel copied 2 x 2) or ``bilinear`` (interpolated: no blocky
            2-pixel steps for the next conv to turn into periodic texture).
    """

    def __init__(self, channels: int = 3, cond_dim: int = 512, image_size: int = 32, z_dim: int = 128,
                 base_channels: int = 32, max_channels: int = 256, emb_dim: int = 128, num_res_blocks: int = 1,
                 cond_input: bool = False, identity_init: bool = True,
                 upsample: Annotated[str, OneOf(UPSAMPLE_MODES)] = "nearest"):
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample={upsample!r}; choose one of {', '.join(UPSAMPLE_MODES)}")
        self.upsample = upsample
        self.sizes = stage_plan(image_size)
        widths = [stage_width(s, image_size, base_channels, max_channels) for s in self.sizes]
        self.z_dim, self.s0, self.c0 = int(z_dim), self.sizes[0], widths[0]
        self.cond_mlp, self.z_emb = CondMLP(cond_dim, emb_dim), nn.Linear(z_dim, emb_dim)
        self.cond_input = bool(cond_input)
        self.fc = nn.Linear(z_dim + (emb_dim if cond_input else 0), widths[0] * self.s0 * self.s0)
        self.stages = nn.ModuleList()
        prev = widths[0]
        for w in widths:
            self.stages.append(nn.ModuleList([ResBlock(prev if i == 0 else w, w, emb_dim)
                                              for i in range(num_res_blocks)]))
            prev = w
        self.out = nn.Sequential(group_norm(prev), nn.SiLU(), nn.Conv2d(prev, channels, 3, padding=1))
        if not identity_init:
            for blocks in self.stages:
                for block in blocks:
                    block.conv2.reset_parameters()

    def forward(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """z: (N, z_dim); cond: (N, cond_dim) -> (N, channels, image_size, image_size), unbounded."""
        c = self.cond_mlp(cond)
        emb = c + self.z_emb(z)
        h = self.fc(torch.cat([z, c], dim=1) if self.cond_input else z).view(z.shape[0], self.c0, self.s0, self.s0)
        for i, blocks in enumerate(self.stages):
            if i > 0:
                h = F.interpolate(h, scale_factor=2, mode=self.upsample)
            for block in blocks:
                h = block(h, emb)
        return self.out(h)


class CondDownNet(nn.Module):
    """(image, caption) -> flat feature vector: stem conv, AdaGN ResBlocks per resolution (caption
    embedding as modulation), stride-2 convs between resolutions, then GN + SiLU + flatten.

    Args: as ``CondUpNet`` (``channels`` = input channels); ``out_features`` is set after build.
    """

    def __init__(self, channels: int = 3, cond_dim: int = 512, image_size: int = 32, base_channels: int = 32,
                 max_channels: int = 256, emb_dim: int = 128, num_res_blocks: int = 1):
        super().__init__()
        sizes = stage_plan(image_size)[::-1]
        widths = [stage_width(s, image_size, base_channels, max_channels) for s in sizes]
        self.cond_mlp = CondMLP(cond_dim, emb_dim)
        self.stem = nn.Conv2d(channels, widths[0], 3, padding=1)
        self.stages, self.downs = nn.ModuleList(), nn.ModuleList()
        prev = widths[0]
        for i, w in enumerate(widths):
            if i > 0:
                self.downs.append(nn.Conv2d(prev, prev, 3, stride=2, padding=1))
            self.stages.append(nn.ModuleList([ResBlock(prev if j == 0 else w, w, emb_dim)
                                              for j in range(num_res_blocks)]))
            prev = w
        self.out = nn.Sequential(group_norm(prev), nn.SiLU(), nn.Flatten())
        self.out_features = prev * sizes[-1] ** 2

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        emb = self.cond_mlp(cond)
        h = self.stem(x)
        for i, blocks in enumerate(self.stages):
            if i > 0:
                h = self.downs[i - 1](h)
            for block in blocks:
                h = block(h, emb)
        return self.out(h)
