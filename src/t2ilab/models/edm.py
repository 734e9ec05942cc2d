"""EDM preconditioning and training noise (Karras et al., NeurIPS 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models"): ``model.parameterization=edm``.

The network F is wrapped so that the denoiser is D(x; sigma) = c_skip x + c_out F(c_in x, t(sigma)) on
x = x0 + sigma n, with c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2),
c_in = 1 / sqrt(sigma^2 + sd^2) (sd = ``sigma_data``), and trained with sigma ~ LogNormal(p_mean, p_std)
and EDM's weight, which makes the loss a unit-weight MSE on F. (With sd = 1 this is exactly
v-prediction; the default sd = 0.5 is EDM's for images in [-1, 1].)

Everything after training is unchanged: the wrapper takes the variance-preserving input x_t =
x / sqrt(1 + sigma^2) and the schedule's timestep that every sampler of models/samplers.py passes, and
returns the epsilon prediction those samplers expect, so DDIM / DPM-Solver++ / Euler / DDPM, guidance,
its interval, autoguidance and SDEdit all work as for ``vp``. The noise level reaches F as the training
schedule's (fractional) timestep of sigma — a monotone map of log sigma — so training and sampling
condition F identically.
"""

from __future__ import annotations

import torch
from torch import nn


class EDMPrecond(nn.Module):
    """Args:
        net: the denoiser network F, ``net(x, t, cond)``.
        alphas_cumprod: the training schedule (T,) — defines sigma(t) = sqrt((1 - a_t) / a_t) and its inverse.
        sigma_data: sd, the data's standard deviation.
    """

    def __init__(self, net: nn.Module, alphas_cumprod: torch.Tensor, sigma_data: float = 0.5):
        super().__init__()
        self.net, self.sigma_data = net, float(sigma_data)
        a = alphas_cumprod.double().clamp(1e-12, 1.0)
        self.register_buffer("log_sigmas", (0.5 * ((1 - a) / a).log()).float(), persistent=False)

    # sigma <-> the schedule's (fractional) timestep, by linear interpolation in log sigma
    def sigma_of(self, t: torch.Tensor) -> torch.Tensor:
        ls = self.log_sigmas.to(t.device)
        t = t.float().clamp(0, len(ls) - 1)
        lo = t.floor().long().clamp(max=len(ls) - 2)
        return torch.exp(torch.lerp(ls[lo], ls[lo + 1], t - lo.float()))

    def timestep_of(self, sigma: torch.Tensor) -> torch.Tensor:
        ls = self.log_sigmas.to(sigma.device)
        x = sigma.float().log().clamp(float(ls[0]), float(ls[-1]))
        hi = torch.searchsorted(ls, x.contiguous()).clamp(1, len(ls) - 1)
        lo = hi - 1
        return lo.float() + (x - ls[lo]) / (ls[hi] - ls[lo]).clamp(min=1e-12)

    def _coefficients(self, sigma: torch.Tensor, ndim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = sigma.view(-1, *([1] * (ndim - 1))).float()
        sd2 = self.sigma_data ** 2
        return s, sd2 / (s ** 2 + sd2), (s ** 2 + sd2).rsqrt()  # sigma, c_skip, c_in (c_out = sigma sd c_in)

    def denoised(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor,
                 t: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(D(x; sigma), F's raw output) for x = x0 + sigma n (N, ...), sigma (N,)."""
        s, c_skip, c_in = self._coefficients(sigma, x.ndim)
        f = self.net(x * c_in, self.timestep_of(sigma) if t is None else t, cond).float()
        return c_skip * x + s * self.sigma_data * c_in * f, f

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The epsilon prediction at the VP input x_t = (x0 + sigma n) / sqrt(1 + sigma^2), timestep t."""
        sigma = self.sigma_of(t)
        s, c_skip, c_in = self._coefficients(sigma, x_t.ndim)
        x = x_t.float() * (1 + s ** 2).sqrt()
        f = self.net(x * c_in, t, cond).float()
        # eps = (x - D) / sigma = sigma c_in^2 x - sd c_in F: no division by a small sigma
        return s * c_in ** 2 * x - self.sigma_data * c_in * f

    def loss(self, x0: torch.Tensor, cond: torch.Tensor, p_mean: float, p_std: float) -> torch.Tensor:
        """EDM's loss: sigma ~ LogNormal(p_mean, p_std) (clamped to the schedule's range), weight
        (sigma^2 + sd^2) / (sigma sd)^2 on ||D - x0||^2 = a unit-weight MSE on F; mean over the batch."""
        n = x0.shape[0]
        sigma = torch.exp(p_mean + p_std * torch.randn(n, device=x0.device))
        sigma = sigma.clamp(float(self.log_sigmas[0].exp()), float(self.log_sigmas[-1].exp()))
        s, c_skip, c_in = self._coefficients(sigma, x0.ndim)
        x = x0 + s * torch.randn_like(x0)
        _, f = self.denoised(x, sigma, cond)
        target = (x0 - c_skip * x) / (s * self.sigma_data * c_in)
        return (f - target.float()).square().mean()
