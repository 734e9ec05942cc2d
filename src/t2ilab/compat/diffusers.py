"""diffusers internals we depend on (tested: diffusers 0.30-0.42; pyproject bound ``<0.43``).

``DDIMScheduler.step`` with ``eta > 0`` computes the "direction to x_t" coefficient as
``sqrt(1 - alpha_prev - (eta * sqrt(var))**2)``; where ``alpha_t`` is ~0 (the first step of a trailing
schedule with the cosine betas) ``var`` equals ``1 - alpha_prev`` and the square-of-a-square-root rounds
it negative by one float32 ulp: NaN images with eta = 1 (tests/models/test_samplers.py). The variance is
clamped a hair below ``1 - alpha_prev`` there (a 1e-6 relative change, only where it would be NaN)."""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler

_MARGIN = 1e-6


class FiniteDDIMScheduler(DDIMScheduler):
    """``DDIMScheduler`` whose stochastic (eta > 0) step never takes the square root of a negative number."""

    def _get_variance(self, timestep, prev_timestep):  # noqa: ANN001 - diffusers' private signature
        variance = super()._get_variance(timestep, prev_timestep)
        alpha_prev = self.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else self.final_alpha_cumprod
        return torch.clamp(variance, max=(1 - alpha_prev) * (1 - _MARGIN))
