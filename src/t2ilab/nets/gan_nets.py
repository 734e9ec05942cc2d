"""Conditional GAN networks: an AdaGN generator and a projection discriminator (plain nn.Modules).

Discriminator (Miyato & Koyama 2018 projection head on an SNGAN/BigGAN-style residual trunk):
``D(x, c) = psi(phi(x)) + <embed(c), phi(x)>`` where ``phi`` is the sum-pooled trunk feature.
The inner-product term is what makes D judge image-text *match* (matching-aware training feeds
it real images with the wrong caption as fakes).
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from t2ilab.nets.cond_conv import CondUpNet, stage_plan, stage_width
from t2ilab.choices import GENERATOR_OUTPUTS
from t2ilab.utils.typecheck import OneOf


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral-normalise every Conv2d/Linear weight inside ``module`` (in place; returns it).
    Zero-initialised weights (identity-start ResBlocks) get a small random init first: sigma(0) = 0."""
    for m in list(module.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if not bool(m.weight.detach().abs().sum()):
                nn.init.normal_(m.weight, std=0.02)
            spectral_norm(m)
    return module


class _InwardClamp(torch.autograd.Function):
    """Clamp to [-1, 1]; backward passes the gradient straight through where the pixel is in range
    or where the step would move it back towards the range (never further out). A plain clamp
    would freeze out-of-range pixels; a plain straight-through lets them drift without bound."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp(-1.0, 1.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        # gradient descent moves x by -grad: above +1 only a positive grad lowers it, below -1 a negative
        keep = ((x >= -1) & (x <= 1)) | ((x > 1) & (grad > 0)) | ((x < -1) & (grad < 0))
        return grad * keep


class Generator(CondUpNet):
    """(z, caption) -> image in [-1,1] space. Args: those of ``CondUpNet`` plus
        spectral_norm: SN on every layer (BigGAN does this; optional here).
        output: ``clamp`` (linear, clamped to [-1, 1] in the forward pass; the gradient passes
            straight through unless it would push a pixel further out, see ``_InwardClamp``), ``linear`` (StyleGAN's choice; ``generate`` clamps) or ``tanh``. With tanh,
            saturated backgrounds (white shapes canvas, black Fashion-MNIST) stay a little off;
            with linear, they overshoot (measured: 45 % of pixels > 1 after 1500 shapes batches).
            Either way D separates real from fake by out-of-range or noisy backgrounds alone.
    """

    def __init__(self, *args, spectral_norm: bool = False,
                 output: Annotated[str, OneOf(GENERATOR_OUTPUTS)] = "clamp", **kwargs):
        super().__init__(*args, **kwargs)
        if output not in GENERATOR_OUTPUTS:
            raise ValueError(f"generator output={output!r}; choose clamp, linear or tanh")
        self.output = output
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = super().forward(z, cond)
        if self.output == "clamp":  # D sees pixels in range, like real ones
            return _InwardClamp.apply(x)
        return torch.tanh(x) if self.output == "tanh" else x


class DBlock(nn.Module):
    """Pre-activation residual block (LeakyReLU 0.2); with ``down`` the 2x average pool sits
    between the two convs (the second conv runs at half resolution: ~2x cheaper D on CPU)."""

    def __init__(self, in_ch: int, out_ch: int, down: bool = True):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch or down else nn.Identity()
        self.down = down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.leaky_relu(x, 0.2))
        s = self.skip(x)
        if self.down:
            h, s = F.avg_pool2d(h, 2), F.avg_pool2d(s, 2)
        return s + self.conv2(F.leaky_relu(h, 0.2))


class Discriminator(nn.Module):
    """Projection discriminator: (image in [-1,1], caption) -> (N,) realness-and-match score.

    Args:
        channels: image channels.
        cond_dim: caption-embedding size.
        image_size: input side (same ``stage_plan`` as the generator).
        base_channels: width at full resolution (doubles per halving).
        max_channels: width cap.
        spectral_norm: SN on every layer (Miyato et al. 2018); keeps D 1-Lipschitz-ish.
        contrastive_dim: size of the contrastive image/text heads (``image_embedding`` /
            ``text_embedding``, LAFITE-style); 0 = no heads (the GAN passes 0 unless
            ``model.contrastive_weight`` > 0, so DDP never sees unused parameters).
        mbstd_group: minibatch standard deviation (Karras et al. 2018) over contiguous groups of
            this many samples, appended as a feature map before the last block: lets D see a
            collapsed (z-ignoring) generator. Groups never straddle the real/fake parts of a
            concatenated batch when each part's size is a multiple of it (0 = off).
    """

    def __init__(self, channels: int = 3, cond_dim: int = 512, image_size: int = 32, base_channels: int = 32,
                 max_channels: int = 256, spectral_norm: bool = True, mbstd_group: int = 0,
                 contrastive_dim: int = 0):
        super().__init__()
        self.mbstd_group = int(mbstd_group)
        sizes = stage_plan(image_size)[::-1]
        widths = [stage_width(s, image_size, base_channels, max_channels) for s in sizes]
        self.stem = nn.Conv2d(channels, widths[0], 3, padding=1)
        blocks, prev = [], widths[0]
        for w in widths[1:]:
            blocks.append(DBlock(prev, w, down=True))
            prev = w
        self.blocks = nn.Sequential(*blocks)
        self.last = DBlock(prev + (1 if self.mbstd_group else 0), prev, down=False)
        self.psi = nn.Linear(prev, 1)
        # LayerNorm: centred CLIP embeddings have small, varying norms; the match term needs scale
        self.embed = nn.Sequential(nn.LayerNorm(cond_dim), nn.Linear(cond_dim, prev, bias=False))
        if spectral_norm:
            apply_spectral_norm(self)
        if contrastive_dim:  # no SN: outputs are L2-normalised, their scale does not matter
            self.image_head = nn.Linear(prev, int(contrastive_dim))
            self.text_head = nn.Sequential(nn.LayerNorm(cond_dim), nn.Linear(cond_dim, int(contrastive_dim)))

    def minibatch_std(self, h: torch.Tensor) -> torch.Tensor:
        """Append the mean per-feature std over each contiguous group of samples (one channel)."""
        n, c, height, width = h.shape
        g = self.mbstd_group if n % self.mbstd_group == 0 else 1
        std = (h.view(n // g, g, c, height, width).var(dim=1, unbiased=False) + 1e-8).sqrt()
        feat = std.mean(dim=(1, 2, 3)).view(-1, 1, 1, 1, 1).expand(n // g, g, 1, height, width)
        return torch.cat([h, feat.reshape(n, 1, height, width)], dim=1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """phi(x): (N, C) sum-pooled trunk features."""
        h = self.blocks(self.stem(x))
        if self.mbstd_group:
            h = self.minibatch_std(h)
        return F.leaky_relu(self.last(h), 0.2).sum(dim=(2, 3))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, return_features: bool = False):
        """(N,) scores; with ``return_features`` also phi(x) (N, C) for ``image_embedding``."""
        h = self.features(x)
        score = self.score(h, cond)
        return (score, h) if return_features else score

    def score(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """(N,) scores of trunk features phi(x) under captions ``cond``: psi(h) + <embed(c), h>. The
        caption enters only here, so the GAN scores (real image, wrong caption) pairs from the real
        images' features instead of a second trunk pass."""
        return self.psi(h).squeeze(1) + (self.embed(cond) * h).sum(1)

    def image_embedding(self, h: torch.Tensor) -> torch.Tensor:
        """Unit-norm contrastive image embedding of trunk features phi(x)."""
        return F.normalize(self.image_head(h), dim=1)

    def text_embedding(self, cond: torch.Tensor) -> torch.Tensor:
        """Unit-norm contrastive text embedding of caption embeddings."""
        return F.normalize(self.text_head(cond), dim=1)

