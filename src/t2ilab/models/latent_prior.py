"""A learned prior over the VAE's vector latent: a small conditional diffusion model in z
(``model.latent_prior=diffusion``).

Why: the KL term pulls each posterior q(z|x,c) towards the Gaussian p(z|c), but the aggregate of the
posteriors of one caption is not that Gaussian; drawing z from the Gaussian lands where the decoder saw
few latents and decodes to blurry or off-class images (Dai & Wipf, ICLR 2019, fit a second VAE to the
latents; we fit a diffusion model, as the diffusion priors of DALL-E 2 / latent diffusion do).

How: trained beside the VAE on its own detached posterior samples, whitened by the Gaussian prior —
u = (z - mu(c)) / sigma(c) — so u is about unit scale and the prior learns only what the Gaussian
misses (with ``prior=standard``, u = z). The VAE's gradients never see it. Sampling runs the shared
diffusion loop (models/samplers.py ``denoise``, deterministic DDIM) over u and maps back,
z = mu(c) + sigma(c) u. It lives inside the VAE net (``VAENet.latent_prior``), so the EMA copy the
VAE samples with carries its EMA weights.

Noise schedule and sampler are diffusers' (DDPMScheduler for training, DDIM to sample); only the
MLP (nets/latent_denoiser.py) is ours: no library ships a conditional denoiser for a vector latent.
"""

from __future__ import annotations

import types
from typing import Any, Callable

import torch
from diffusers import DDPMScheduler
from torch import nn

from t2ilab.choices import SCHEDULES
from t2ilab.models.samplers import build_scheduler, denoise, noised_and_target
from t2ilab.nets.latent_denoiser import LatentDenoiser


class DiffusionPrior(nn.Module):
    """Args:
        z_dim: latent size; cond_dim: width of the prepared caption rows.
        width, depth: of the MLP denoiser.
        repeats: noise levels drawn per latent per training step (the MLP is cheap next to the VAE's
            conv nets; more levels per latent = a less noisy prior loss for the same batch).
        prediction: ``v_prediction`` (well-behaved at the few sampler steps the prior needs) or ``epsilon``.
    """

    def __init__(self, z_dim: int, cond_dim: int, width: int = 256, depth: int = 3, repeats: int = 2,
                 prediction: str = "v_prediction", num_train_timesteps: int = 1000):
        super().__init__()
        if int(repeats) < 1:
            raise ValueError(f"latent prior repeats={repeats} must be >= 1")
        self.z_dim, self.repeats, self.prediction = int(z_dim), int(repeats), prediction
        self.net = LatentDenoiser(self.z_dim, cond_dim, width, depth)
        self.noise_scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps,
                                             beta_schedule=SCHEDULES["cosine"], prediction_type=prediction,
                                             clip_sample=False)

    def loss(self, u: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Mean squared error of the denoiser on ``u`` (N, z_dim; detached whitened latents) under captions
        ``cond`` (prepared, dropped like the VAE's), ``repeats`` noise levels per latent."""
        u, cond = u.repeat(self.repeats, 1), cond.repeat(self.repeats, 1)
        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (u.shape[0],), device=u.device)
        noise = torch.randn_like(u)
        acp = self.noise_scheduler.alphas_cumprod.to(u.device)[t].view(-1, 1)
        u_t, target = noised_and_target(u, noise, acp, self.prediction)
        return (self.net(u_t, t, cond).float() - target).square().mean()

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor, generator: Any,
               randn: Callable[..., torch.Tensor], *, num_steps: int = 25,
               guidance_scale: float = 1.0) -> torch.Tensor:
        """Whitened latents u (N, z_dim) from ``noise`` (N, z_dim) by ``num_steps`` DDIM steps, with
        classifier-free guidance of scale ``guidance_scale`` against ``uncond`` (1 = none)."""
        sched = build_scheduler("ddim", self.noise_scheduler.config, num_steps, device=noise.device)
        ctx = types.SimpleNamespace(prediction=self.prediction, noise_scheduler=self.noise_scheduler,
                                    randn=randn, device=noise.device)
        return denoise(ctx, self.net, sched, noise, sched.timesteps, cond, uncond, generator,
                       guidance_scale=guidance_scale, progress=False)
