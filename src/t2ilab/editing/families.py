"""The VAE and GAN edits behind ``VAEModule.edit`` / ``GANModule.edit`` and the family-agnostic
``edit_batch`` the entry point calls (it also returns per-image diagnostics such as the inversion
error, which the bare ``model.edit`` API has no room for). See editing/__init__.py for the semantics.

Every edit is per image: image i depends only on (image i, its captions, generator i), never on the
batch it is edited in, so batch size and grouping never change a file.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator

import torch
from torch import nn

from t2ilab.models.base import Generator, to_unit_range


SPATIAL = ("this VAE is the spatial-latent autoencoder (model.net.latent=spatial, model=autoencoder): it ignores "
           "captions, so there is nothing to edit; use a conditional VAE (model=vae) or the latent diffusion model "
           "built on it")


def check_strength(strength: Any) -> float:
    """``strength`` as a float in (0, 1]; a ValueError naming ``strength`` otherwise."""
    try:
        s = float(strength)
    except (TypeError, ValueError):
        s = math.nan
    if isinstance(strength, bool) or not math.isfinite(s) or not 0.0 < s <= 1.0:
        raise ValueError(f"strength={strength!r} must be a number in (0, 1] (1 = full edit; small values keep "
                         "more of the source)")
    return s


def check_images(model: Any, images01: torch.Tensor) -> torch.Tensor:
    """Images as float32 on the model's device; clear errors for a wrong shape or range (the entry
    point resizes and converts inputs before, see editing/inputs.py)."""
    if not torch.is_tensor(images01) or images01.ndim != 4 or tuple(images01.shape[1:]) != tuple(model.image_shape):
        shape = tuple(images01.shape) if torch.is_tensor(images01) else type(images01).__name__
        raise ValueError(f"edit needs images (N, {', '.join(map(str, model.image_shape))}) in [0,1] (the model's "
                         f"channels and resolution), got {shape}")
    x = images01.to(model.device, torch.float32)
    if x.numel() and (x.min() < -1e-3 or x.max() > 1 + 1e-3):
        raise ValueError(f"edit needs images in [0,1], got [{float(x.min()):.3f}, {float(x.max()):.3f}]")
    return x.clamp(0.0, 1.0)


def check_options(model: Any, sampling: dict[str, Any]) -> None:
    bad = set(sampling) - set(model.sampling_keys)
    if bad:
        raise TypeError(f"{model.family}.edit got unknown options {sorted(bad)}; valid: {list(model.sampling_keys)}")


def edit_conds(model: Any, cond: torch.Tensor, source_cond: torch.Tensor | None,
               strength: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(source, edit) conditions in the prepared space: source = the source caption's (else the
    learned null condition), edit = ``lerp(source, target, strength)`` (exact at s = 1 and when both agree)."""
    target = model.prepare_cond(cond)
    if source_cond is None:
        source = model.null_cond(target.shape[0]).to(target)
    else:
        source = model.prepare_cond(source_cond)
        if source.shape != target.shape:
            raise ValueError(f"source_cond {tuple(source_cond.shape)} does not match cond {tuple(cond.shape)}")
    return source, torch.lerp(source, target, strength)


def per_image_mse(a01: torch.Tensor, b01: torch.Tensor) -> torch.Tensor:
    """(N,) mean squared error in [0,1] pixel units."""
    return (a01.float() - b01.float()).pow(2).flatten(1).mean(1)


def vae_edit(model: Any, images01: torch.Tensor, cond: torch.Tensor, *, strength: float,
             generator: Generator = None, source_cond: torch.Tensor | None = None,
             **sampling: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """VAE edit: z = posterior mean under the source caption; its standardised offset from the
    source prior is replayed under the edit condition ``c``: ``z' = mu_p(c) + sigma_p(c) / sigma_p(c_src)
    * (z - mu_p(c_src))`` (a standard prior leaves z unchanged), decoded with ``c``. Deterministic
    (``generator`` unused; ``temperature`` is accepted and ignored: no prior draw is made).

    Returns (images (N,C,H,W) in [0,1], {"inversion_mse": (N,) error of decoding z with the source
    caption: how much of the image the latent holds}).
    """
    s = check_strength(strength)
    if model.spatial:
        raise ValueError(SPATIAL)
    check_options(model, sampling)
    x01 = check_images(model, images01)
    from t2ilab.models.losses import decoded_mean

    with torch.no_grad(), model.sampling_mode() as net:
        c_src, c = edit_conds(model, cond, source_cond, s)
        z, _ = net.encode(x01 * 2 - 1, c_src)
        mu_s, logvar_s = net.prior(c_src)
        mu_e, logvar_e = net.prior(c)
        z_edit = mu_e + (z - mu_s) * torch.exp(0.5 * (logvar_e - logvar_s))
        out = to_unit_range(decoded_mean(model.recon, net.decode(z_edit, c)))
        recon = to_unit_range(decoded_mean(model.recon, net.decode(z, c_src)))
    return out, {"inversion_mse": per_image_mse(recon, x01).cpu()}


@contextlib.contextmanager
def frozen(net: nn.Module) -> Iterator[None]:
    """No parameter gradients inside (only z is optimised); the flags are restored after."""
    flags = [p.requires_grad for p in net.parameters()]
    try:
        for p in net.parameters():
            p.requires_grad_(False)
        yield
    finally:
        for p, f in zip(net.parameters(), flags):
            p.requires_grad_(f)


def invert_gan(net: nn.Module, x: torch.Tensor, c_src: torch.Tensor, z0: torch.Tensor,
               steps: int, lr: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fit z so that ``net(z, c_src)`` matches images ``x`` ([-1,1]): Adam on the per-image pixel MSE
    (the sum of per-image losses: each z row sees only its own image). Keeps, per image, the best z
    seen, so the result is never worse than the start. Returns (z, start MSE, final MSE), MSE in
    [0,1] pixel units."""
    x01 = (x + 1) / 2
    z = z0.detach().clone().requires_grad_(True)
    best_z, best = z0.detach().clone(), torch.full((x.shape[0],), math.inf, device=x.device)
    start = None
    opt = torch.optim.Adam([z], lr=float(lr))
    with torch.enable_grad(), frozen(net):
        for step in range(int(steps) + 1):  # the last pass only scores the final z
            out = net(z, c_src)
            err = (out - x).pow(2).flatten(1).mean(1)
            with torch.no_grad():
                scored = per_image_mse(to_unit_range(out), x01)
                start = scored.clone() if start is None else start
                better = scored < best
                best = torch.where(better, scored, best)
                best_z[better] = z.detach()[better]
            if step == int(steps):
                break
            opt.zero_grad(set_to_none=True)
            err.sum().backward()
            opt.step()
    return best_z, start, best


def gan_edit(model: Any, images01: torch.Tensor, cond: torch.Tensor, *, strength: float,
             generator: Generator = None, source_cond: torch.Tensor | None = None, inversion_steps: int = 200,
             inversion_lr: float = 0.05, **sampling: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GAN edit: a GAN has no encoder, so the image is first INVERTED: z starts from a seeded draw
    (``generator``, one per image; ``truncation`` applies to it) and is fitted by ``invert_gan`` under
    the source caption; ``G(z, c)`` under the edit condition is the edit. How well a GAN can be
    inverted depends on the model: ``inversion_mse`` (vs ``inversion_mse_init`` at the random start)
    says it per image, and a poor inversion shows in the faithfulness metrics.

    Returns (images (N,C,H,W) in [0,1], {"inversion_mse", "inversion_mse_init"}).
    """
    s = check_strength(strength)
    if int(inversion_steps) < 0 or isinstance(inversion_steps, bool):
        raise ValueError(f"inversion_steps={inversion_steps!r} must be an integer >= 0")
    if not float(inversion_lr) > 0:
        raise ValueError(f"inversion_lr={inversion_lr!r} must be > 0")
    check_options(model, sampling)
    x01 = check_images(model, images01)
    truncation = {**model.sampling_defaults, **sampling}.get("truncation")
    with model.sampling_mode() as net:
        with torch.no_grad():
            c_src, c = edit_conds(model, cond, source_cond, s)
            z0 = model.sample_z(x01.shape[0], generator, truncation)
        z, start, final = invert_gan(net, x01 * 2 - 1, c_src, z0, int(inversion_steps), float(inversion_lr))
        with torch.no_grad():
            out = to_unit_range(net(z, c))
    return out, {"inversion_mse": final.cpu(), "inversion_mse_init": start.cpu()}


EDITORS: dict[str, Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]] = {"vae": vae_edit, "gan": gan_edit}
FAMILY_OPTIONS = {"gan": ("inversion_steps", "inversion_lr")}  # edit options beyond the family's sampling keys


def require_edit(model: Any) -> None:
    """A clear error for families without ``edit`` (before any work)."""
    if not callable(getattr(model, "edit", None)):
        family = getattr(model, "family", type(model).__name__)
        raise NotImplementedError(f"{family} has no edit(): text-guided editing is implemented for "
                                  f"{sorted(EDITORS)} and the diffusion family (models/diffusion.py)")
    if getattr(model, "spatial", False):
        raise ValueError(SPATIAL)


def edit_batch(model: Any, images01: torch.Tensor, cond: torch.Tensor, *, strength: float,
               generator: Generator = None, source_cond: torch.Tensor | None = None,
               **options: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``model.edit`` plus per-image diagnostics (VAE/GAN: the inversion error; others: none).
    ``options``: sampling options and family options (``FAMILY_OPTIONS``; dropped for other families)."""
    require_edit(model)
    family = getattr(model, "family", "")
    extra = FAMILY_OPTIONS.get(family, ())
    options = {k: v for k, v in options.items() if k in extra or k not in _ALL_FAMILY_OPTIONS}
    kwargs = dict(strength=strength, generator=generator, source_cond=source_cond, **options)
    if family in EDITORS:
        return EDITORS[family](model, images01, cond, **kwargs)
    return model.edit(images01, cond, **kwargs), {}


_ALL_FAMILY_OPTIONS = {k for keys in FAMILY_OPTIONS.values() for k in keys}
