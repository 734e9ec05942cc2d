"""Conditional VAE network: encoder q(z|x,c) and decoder p(x|z,c), both caption-modulated (AdaGN).

The latent is a vector (not a spatial map): with a factorised N(0, I) prior, a spatial latent
samples every location independently and global layout (one shape, one garment) falls apart;
a vector latent keeps samples coherent, and the caption carries the class through both nets.
The decoder is the GAN generator's architecture (``CondUpNet``) with a linear output, so the two
families differ in their objective, not in their decoder.
"""

from __future__ import annotations

import torch
from torch import nn

from t2ilab.nets.cond_conv import CondDownNet, CondUpNet
from t2ilab.nets.layers import CondMLP


class VAENet(nn.Module):
    """Args:
        channels: image channels.
        cond_dim: caption-embedding size.
        image_size: image side (``cond_conv.stage_plan``).
        z_dim: latent size.
        base_channels: width at full resolution (doubles per halving).
        max_channels: width cap.
        emb_dim: size of the caption modulation embedding.
        num_res_blocks: AdaGN ResBlocks per resolution (encoder and decoder).
        scale_channels: learned log-scale of p(x|z,c): 0 = none (mse/bce), 1 = one scalar,
            ``channels`` = one per channel (gaussian/laplace).
        conditional_prior: learn p(z|c) = N(mu(c), diag sigma(c)^2) (Sohn et al. 2015) instead of
            N(0, I); starts at N(0, I) (zero-initialised last layer).
    """

    def __init__(self, channels: int = 3, cond_dim: int = 512, image_size: int = 32, z_dim: int = 64,
                 base_channels: int = 32, max_channels: int = 256, emb_dim: int = 128, num_res_blocks: int = 1,
                 scale_channels: int = 0, conditional_prior: bool = False):
        super().__init__()
        widths = dict(base_channels=base_channels, max_channels=max_channels, emb_dim=emb_dim,
                      num_res_blocks=num_res_blocks)
        self.z_dim = int(z_dim)
        self.encoder = CondDownNet(channels, cond_dim, image_size, **widths)
        self.to_posterior = nn.Linear(self.encoder.out_features, 2 * self.z_dim)
        self.decoder = CondUpNet(channels, cond_dim, image_size, z_dim=self.z_dim, **widths)
        self.log_scale = nn.Parameter(torch.zeros(scale_channels, 1, 1)) if scale_channels else None
        self.prior_net = CondMLP(cond_dim, 2 * self.z_dim) if conditional_prior else None
        if self.prior_net is not None:
            nn.init.zeros_(self.prior_net.net[-1].weight)
            nn.init.zeros_(self.prior_net.net[-1].bias)

    def encode(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of q(z|x,c), each (N, z_dim); logvar clamped for numerical safety."""
        mu, logvar = self.to_posterior(self.encoder(x, cond)).chunk(2, dim=1)
        return mu, logvar.clamp(-20.0, 10.0)

    def prior(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of p(z|c), each (N, z_dim): zeros for the standard-normal prior."""
        if self.prior_net is None:
            zeros = cond.new_zeros(cond.shape[0], self.z_dim)
            return zeros, zeros
        mu, logvar = self.prior_net(cond).chunk(2, dim=1)
        return mu, logvar.clamp(-20.0, 10.0)

    def decode(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Decoder output (N,C,H,W): the mean of p(x|z,c) in [-1,1] space, or logits (bce)."""
        return self.decoder(z, cond)
