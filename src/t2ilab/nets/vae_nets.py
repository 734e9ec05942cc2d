"""VAE networks: the conditional VAE (vector latent) and the spatial-latent autoencoder.

``latent=vector`` (default): encoder q(z|x,c) and decoder p(x|z,c), both caption-modulated (AdaGN).
The latent is a vector (not a spatial map): with a factorised N(0, I) prior, a spatial latent
samples every location independently and global layout (one shape, one garment) falls apart;
a vector latent keeps samples coherent, and the caption carries the class through both nets.
The decoder is the GAN generator's architecture (``CondUpNet``) with a linear output, so the two
families differ in their objective, not in their decoder.

``latent=spatial``: an unconditional convolutional autoencoder with a (latent_channels,
image_size/downsample, image_size/downsample) latent map (4x8x8 for 32 px), the first stage of
latent diffusion (models/latent_diffusion.py). Encoder and decoder ignore the caption on purpose:
the latent diffusion model conditions on the text, the autoencoder only compresses, and a caption
inside it would make the latents (and the decoder) depend on the prompt the diffusion model has to
produce them for. Its prior is N(0, I) with a small KL weight, which only keeps the latent map
bounded and smooth; sampling that prior (``generate``) gives texture, not objects.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from t2ilab.nets.cond_conv import CondDownNet, CondUpNet
from t2ilab.nets.layers import CondMLP, group_norm

from t2ilab.choices import LATENTS  # noqa: E402,F401  (one source of the choices)
from t2ilab.utils.typecheck import OneOf


class VAENet(nn.Module):
    """Args:
        channels: image channels.
        cond_dim: caption-embedding size.
        image_size: image side (``cond_conv.stage_plan``).
        z_dim: latent size (``vector``).
        base_channels: width at full resolution (doubles per halving).
        max_channels: width cap.
        emb_dim: size of the caption modulation embedding (``vector``).
        num_res_blocks: ResBlocks per resolution (encoder and decoder).
        scale_channels: learned log-scale of p(x|z,c): 0 = none (mse/bce), 1 = one scalar,
            ``channels`` = one per channel (gaussian/laplace).
        conditional_prior: learn p(z|c) = N(mu(c), diag sigma(c)^2) (Sohn et al. 2015) instead of
            N(0, I); starts at N(0, I) (zero-initialised last layer). ``vector`` only.
        latent: ``vector`` (caption-conditioned VAE) or ``spatial`` (unconditional autoencoder for
            latent diffusion; see the module docstring).
        latent_prior: a learned prior over the vector latent (models/latent_prior.py), built by the module
            (``model.latent_prior``); kept here so the EMA copy of the net carries it. ``vector`` only.
        latent_channels: channels of the spatial latent map.
        downsample: image side / latent side (a power of 2 dividing ``image_size``).
    """

    def __init__(self, channels: int = 3, cond_dim: int = 512, image_size: int = 32, z_dim: int = 64,
                 base_channels: int = 32, max_channels: int = 256, emb_dim: int = 128, num_res_blocks: int = 1,
                 scale_channels: int = 0, conditional_prior: bool = False, latent: Annotated[str, OneOf(LATENTS)] = "vector",
                 latent_channels: int = 4, downsample: int = 4, latent_prior: nn.Module | None = None):
        super().__init__()
        self.latent_prior = latent_prior
        if latent not in LATENTS:
            raise ValueError(f"model.net.latent={latent!r}: expected one of {LATENTS}")
        self.latent = latent
        if latent == "spatial":
            if latent_prior is not None:
                raise ValueError("model.latent_prior=diffusion needs model.net.latent=vector: the spatial autoencoder's "
                                 "latents get their prior from latent diffusion (model=latent_diffusion)")
            if conditional_prior:
                raise ValueError("model.prior=conditional needs model.net.latent=vector: the spatial autoencoder "
                                 "is unconditional with an N(0, I) prior; set model.prior=standard (model=autoencoder "
                                 "does)")
            ds = int(downsample)
            if ds < 1 or ds & (ds - 1) or image_size % ds:
                raise ValueError(f"model.net.downsample={downsample} must be a power of 2 dividing the image size "
                                 f"{image_size} (4: 32 px -> 8x8 latents)")
            widths = [min(int(max_channels), int(base_channels) * 2**i) for i in range(ds.bit_length())]
            self.latent_shape = (int(latent_channels), image_size // ds, image_size // ds)
            self.encoder = SpatialEncoder(channels, int(latent_channels), widths, num_res_blocks)
            self.decoder = SpatialDecoder(channels, int(latent_channels), widths, num_res_blocks)
            self.log_scale = nn.Parameter(torch.zeros(scale_channels, 1, 1)) if scale_channels else None
            self.prior_net = None
            return
        widths = dict(base_channels=base_channels, max_channels=max_channels, emb_dim=emb_dim,
                      num_res_blocks=num_res_blocks)
        self.z_dim = int(z_dim)
        self.latent_shape = (self.z_dim,)
        self.encoder = CondDownNet(channels, cond_dim, image_size, **widths)
        self.to_posterior = nn.Linear(self.encoder.out_features, 2 * self.z_dim)
        self.decoder = CondUpNet(channels, cond_dim, image_size, z_dim=self.z_dim, **widths)
        self.log_scale = nn.Parameter(torch.zeros(scale_channels, 1, 1)) if scale_channels else None
        self.prior_net = CondMLP(cond_dim, 2 * self.z_dim) if conditional_prior else None
        if self.prior_net is not None:
            nn.init.zeros_(self.prior_net.net[-1].weight)
            nn.init.zeros_(self.prior_net.net[-1].bias)

    def encode(self, x: torch.Tensor, cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of q(z|x,c), each (N, *latent_shape); logvar clamped for numerical safety.
        ``spatial`` ignores ``cond`` (may be None)."""
        if self.latent == "spatial":
            mu, logvar = self.encoder(x).chunk(2, dim=1)
        else:
            mu, logvar = self.to_posterior(self.encoder(x, cond)).chunk(2, dim=1)
        return mu, logvar.clamp(-20.0, 10.0)

    def prior(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of p(z|c), each (N, *latent_shape): zeros for the standard-normal prior."""
        if self.prior_net is None:
            zeros = cond.new_zeros(cond.shape[0], *self.latent_shape)
            return zeros, zeros
        mu, logvar = self.prior_net(cond).chunk(2, dim=1)
        return mu, logvar.clamp(-20.0, 10.0)

    def decode(self, z: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """Decoder output (N,C,H,W): the mean of p(x|z,c) in [-1,1] space, or logits (bce).
        ``spatial`` ignores ``cond`` (may be None)."""
        return self.decoder(z) if self.latent == "spatial" else self.decoder(z, cond)


class PlainResBlock(nn.Module):
    """Pre-norm residual block without modulation (the autoencoder has no conditioning input)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.norm1, self.conv1 = group_norm(in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2, self.conv2 = group_norm(out_ch), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))


def _blocks(in_ch: int, out_ch: int, n: int) -> nn.Sequential:
    return nn.Sequential(*[PlainResBlock(in_ch if i == 0 else out_ch, out_ch) for i in range(max(1, n))])


class SpatialEncoder(nn.Module):
    """Image -> (mu, logvar) maps stacked on channels: stem conv, ResBlocks per level, stride-2 convs
    between levels (one per halving; ``widths`` has one entry per level), GN + SiLU + conv out."""

    def __init__(self, channels: int, latent_channels: int, widths: list[int], num_res_blocks: int = 1):
        super().__init__()
        self.stem = nn.Conv2d(channels, widths[0], 3, padding=1)
        layers: list[nn.Module] = []
        for i, w in enumerate(widths):
            if i > 0:
                layers.append(nn.Conv2d(widths[i - 1], w, 3, stride=2, padding=1))
            layers.append(_blocks(w, w, num_res_blocks))
        self.body = nn.Sequential(*layers)
        self.out = nn.Sequential(group_norm(widths[-1]), nn.SiLU(),
                                 nn.Conv2d(widths[-1], 2 * latent_channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(self.stem(x)))


class SpatialDecoder(nn.Module):
    """Latent map -> image: conv in, ResBlocks per level, nearest-upsample + conv between levels,
    GN + SiLU + conv out (linear output: the mean in [-1,1] space, or logits for bce)."""

    def __init__(self, channels: int, latent_channels: int, widths: list[int], num_res_blocks: int = 1):
        super().__init__()
        self.inp = nn.Conv2d(latent_channels, widths[-1], 3, padding=1)
        layers: list[nn.Module] = []
        for i in reversed(range(len(widths))):
            layers.append(_blocks(widths[i], widths[i], num_res_blocks))
            if i > 0:
                layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                           nn.Conv2d(widths[i], widths[i - 1], 3, padding=1)]
        self.body = nn.Sequential(*layers)
        self.out = nn.Sequential(group_norm(widths[0]), nn.SiLU(), nn.Conv2d(widths[0], channels, 3, padding=1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(self.inp(z)))
