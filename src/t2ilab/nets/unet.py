"""A compact text-conditioned UNet denoiser: (x_t, t, cond) -> prediction of x_t's shape.

The noise level enters through a sinusoidal embedding, the caption through ``CondMLP``; their sum
modulates every residual block (AdaGN). Self-attention runs at the resolutions listed in
``attn_resolutions`` (low ones: cheap and where global layout is decided). With token conditioning
(``token_dim`` > 0; ``cond`` is then the packed row of encoders/tokens.py) cross-attention blocks over
the caption's token states follow at ``cross_attention_resolutions`` (and in the middle block when
its resolution is listed): which word goes where is decided per position, not by one vector.
"""

from __future__ import annotations

from typing import Annotated, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from t2ilab.encoders.tokens import TokenLayout
from t2ilab.nets.layers import CondMLP, CrossAttention, ResBlock, SelfAttention, group_norm, sinusoidal_embedding
from t2ilab.utils.typecheck import Range


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
        token_dim, max_tokens: the packed token layout (filled in by the module for
            ``model.cond_type=tokens``; 0 = pooled conditioning only).
        cross_attention_resolutions: feature-map sizes that get cross-attention over the tokens
            (``tokens`` only; default: the ``attn_resolutions``).
    """

    def __init__(self, channels: int = 3, cond_dim: int = 512, image_size: int = 32,
                 base_channels: Annotated[int, Range(ge=1)] = 64, channel_mult: Sequence[int] = (1, 2, 2),
                 num_res_blocks: Annotated[int, Range(ge=0)] = 2, attn_resolutions: Sequence[int] = (8,),
                 heads: Annotated[int, Range(ge=1)] = 4, dropout: Annotated[float, Range(ge=0, lt=1)] = 0.0,
                 patch_size: Annotated[int, Range(ge=1)] = 1,
                 token_dim: int = 0, max_tokens: int = 0, cross_attention_resolutions: Sequence[int] | None = None):
        super().__init__()
        if token_dim and cross_attention_resolutions is None:
            cross_attention_resolutions = attn_resolutions
        cross = set(cross_attention_resolutions or ())
        if cross and not token_dim:
            raise ValueError("model.net.cross_attention_resolutions needs token states: set model.cond_type=tokens "
                             "(or model.net.cross_attention_resolutions=null for pooled conditioning)")
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
        self.layout = TokenLayout(cond_dim, token_dim, max_tokens) if token_dim else None
        if self.layout is not None:  # token states -> a shared context width (LayerNorm: encoders' scales differ)
            self.context = nn.Sequential(nn.LayerNorm(token_dim), nn.Linear(token_dim, emb_dim))

        def attention(ch: int, res: int) -> list[nn.Module]:
            return ([SelfAttention(ch, heads)] if res in attn_resolutions else []) + \
                   ([CrossAttention(ch, emb_dim, heads)] if res in cross else [])
        self.stem = nn.Conv2d(channels, base_channels, 3, padding=1)

        self.down, skips, ch, res = nn.ModuleList(), [base_channels], base_channels, image_size
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                block = nn.ModuleList([ResBlock(ch, base_channels * mult, emb_dim, dropout)])
                ch = base_channels * mult
                block.extend(attention(ch, res))
                self.down.append(block)
                skips.append(ch)
            if level < len(channel_mult) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(ch, ch, 3, stride=2, padding=1)]))
                skips.append(ch)
                res //= 2
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_dim, dropout), SelfAttention(ch, heads),
                                  *([CrossAttention(ch, emb_dim, heads)] if res in cross else []),
                                  ResBlock(ch, ch, emb_dim, dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                block = nn.ModuleList([ResBlock(ch + skips.pop(), base_channels * mult, emb_dim, dropout)])
                ch = base_channels * mult
                block.extend(attention(ch, res))
                if level > 0 and i == num_res_blocks:
                    block.append(nn.Upsample(scale_factor=2, mode="nearest"))
                    block.append(nn.Conv2d(ch, ch, 3, padding=1))
                    res *= 2
                self.up.append(block)
        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), nn.Conv2d(ch, channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    @staticmethod
    def _run(block: nn.ModuleList, h: torch.Tensor, emb: torch.Tensor, ctx: tuple | None) -> torch.Tensor:
        for layer in block:
            if isinstance(layer, ResBlock):
                h = layer(h, emb)
            elif isinstance(layer, CrossAttention):
                h = layer(h, *ctx)
            else:
                h = layer(h)
        return h

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x: (N,C,H,W) noisy images; t: (N,) timesteps (any scale); cond: (N,cond_dim), or the
        packed token rows when built with ``token_dim``."""
        ctx = None
        if self.layout is not None:
            cond, tokens, mask = self.layout.unpack(cond)
            ctx = (self.context(tokens), mask)
        emb = self.time_mlp(sinusoidal_embedding(t, self.base_channels)) + self.cond_mlp(cond)
        if self.patch_size > 1:
            x = F.pixel_unshuffle(x, self.patch_size)
        h = self.stem(x)
        hs = [h]
        for block in self.down:
            h = self._run(block, h, emb, ctx)
            hs.append(h)
        h = self._run(self.mid, h, emb, ctx)
        for block in self.up:
            h = self._run(block, torch.cat([h, hs.pop()], dim=1), emb, ctx)
        out = self.out(h)
        return F.pixel_shuffle(out, self.patch_size) if self.patch_size > 1 else out
