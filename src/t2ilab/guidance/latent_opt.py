"""CLIP guidance for one-shot families (GAN, VAE): optimise the latent, then decode.

A GAN or VAE has no iterative sampler to steer, but its image is a differentiable function of a
latent z (GAN: the generator's z; VAE: the prior sample z = mu(c) + T sigma(c) eps). Starting from
exactly the z that ``generate`` would draw for the same generator, k Adam steps minimise

    loss_i = -scale * cos(CLIP(G(z_i, c_i)), CLIP(prompt_i)) + pull * mean(((z_i - z0_i) / sigma_i)^2)

per sample (sigma = 1 for the GAN, the prior std for the VAE): the L2 pull keeps z near its prior
draw (in prior-std units), where the decoder was trained, so images stay on the data manifold
instead of becoming CLIP adversarial patterns. Adam normalises gradient magnitudes, so ``scale``
only matters relative to ``pull``; ``lr`` sets the step size in z units.

The result is the iterate with the lowest loss seen (the start included), so in the guiding
CLIP's eyes a guided image is never worse than the unguided one (at the start the pull is 0, so
the best loss can only be reached with a similarity >= the initial one). Samples never interact
(summed per-sample losses, per-element Adam, nets in eval mode), so batching changes no image,
and ``steps=0`` returns exactly ``model.generate``'s image.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from t2ilab.guidance.clip_guidance import clip_similarity
from t2ilab.models.base import Generator, to_unit_range

FAMILIES = ("gan", "vae")


def _latents(model: Any, net: Any, cond: torch.Tensor, generator: Generator,
             opts: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """(z0, sigma, decode) drawn exactly as the family's ``_generate`` draws them."""
    n = cond.shape[0]
    if model.family == "gan":
        z0 = model.sample_z(n, generator, opts.get("truncation"))
        return z0, torch.ones_like(z0), lambda z: net(z, cond)
    from t2ilab.models.losses import decoded_mean

    mu, logvar = net.prior(cond)
    std = torch.exp(0.5 * logvar)
    eps = model.randn((n, *net.latent_shape), generator)
    z0 = mu + eps * std * float(opts.get("temperature", 1.0))
    return z0, std.expand_as(z0), lambda z: decoded_mean(model.recon, net.decode(z, cond))


def clip_optimise_latents(model: Any, cond: torch.Tensor, text_features: torch.Tensor, clip_model: Any,
                          steps: int = 20, lr: float = 0.05, generator: Generator = None, *, scale: float = 1.0,
                          pull: float = 0.1, **sampling: Any) -> torch.Tensor:
    """Images (N,C,H,W) in [0,1] like ``model.generate(cond, generator=generator, **sampling)``,
    with each latent optimised toward its prompt's CLIP text embedding (see the module docstring).

    Args:
        model: a GANModule or VAEModule (EMA weights are used, as in ``generate``).
        cond: (N, cond_width) conditioning rows (the conditioning encoder's output).
        text_features: (N, D) embeddings of the same prompts by ``clip_model``.
        clip_model: the guiding OpenCLIPEncoder (``build_clip``), on the model's device.
        steps: Adam steps (0 = the unguided image).
        lr: Adam learning rate (z units).
        generator: one generator or one per row, as ``generate`` takes.
        scale: weight of the CLIP similarity term.
        pull: weight of the L2 pull toward the initial z (prior-std units).
        **sampling: the family's ``generate`` options (GAN: truncation; VAE: temperature).
    """
    if model.family not in FAMILIES:
        raise ValueError(f"latent optimisation is for {FAMILIES}, not {model.family!r} (diffusion: ClipGuidance)")
    bad = set(sampling) - set(model.sampling_keys)
    if bad:
        raise TypeError(f"{model.family}.generate got unknown options {sorted(bad)}; valid: {list(model.sampling_keys)}")
    if int(steps) < 0 or float(lr) <= 0:
        raise ValueError(f"clip_guidance: steps={steps} must be >= 0 and lr={lr} > 0")
    opts = {**model.sampling_defaults, **sampling}
    tf = text_features.to(model.device, torch.float32)
    with torch.no_grad():
        c = model.prepare_cond(cond)
    with model.sampling_mode() as net:
        with torch.no_grad():
            z0, sigma, decode = _latents(model, net, c, generator, opts)
        z = z0.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=float(lr))
        best_loss = torch.full((z0.shape[0],), float("inf"), device=z0.device)
        best_x: torch.Tensor | None = None
        for k in range(int(steps) + 1):
            last = k == int(steps)
            with torch.set_grad_enabled(not last):
                x = decode(z)
                sim = clip_similarity(clip_model, x, tf)
                dist = ((z - z0) / sigma).square().flatten(1).mean(1)
                loss = -float(scale) * sim + float(pull) * dist
            better = loss.detach() < best_loss
            best_loss = torch.where(better, loss.detach(), best_loss)
            keep = better.view(-1, *([1] * (x.dim() - 1)))
            best_x = x.detach() if best_x is None else torch.where(keep, x.detach(), best_x)
            if not last:
                # autograd.grad, not backward(): the nets' parameter .grad stay untouched
                (z.grad,) = torch.autograd.grad(loss.sum(), [z])
                opt.step()
    return to_unit_range(best_x)
