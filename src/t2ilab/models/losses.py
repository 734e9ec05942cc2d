"""Loss terms of the GAN and VAE families (single-purpose functions, no state).

GAN: hinge loss (Lim & Ye 2017; SAGAN/BigGAN) or the non-saturating logistic loss, R1 (Mescheder et al. 2018) and DF-GAN's
matching-aware zero-centred gradient penalty (Tao et al. 2022), LAFITE's contrastive term.
VAE: per-image negative log-likelihoods in nats (summed over pixels) and the Gaussian KL.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from t2ilab.choices import ADV_LOSSES, GP_KINDS, RECON_KINDS  # noqa: E402,F401  (one source of the choices)
MA_GP_POWER = 6  # DF-GAN: k * E[||grad||^p] with k=2, p=6




def d_real_loss(kind: str, scores: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """D's loss on samples it should call real: hinge E[relu(1 - D)] or logistic E[softplus(-D)]."""
    return hinge_real(scores, mask) if kind == "hinge" else _masked_mean(F.softplus(-scores), mask)


def d_fake_loss(kind: str, scores: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """D's loss on samples it should call fake: hinge E[relu(1 + D)] or logistic E[softplus(D)]."""
    return hinge_fake(scores, mask) if kind == "hinge" else _masked_mean(F.softplus(scores), mask)


def g_adv_loss(kind: str, scores: torch.Tensor) -> torch.Tensor:
    """G's loss: hinge -E[D] or the non-saturating E[softplus(-D)] (Goodfellow et al. 2014)."""
    return -scores.mean() if kind == "hinge" else F.softplus(-scores).mean()


def mode_seeking_ratio(fake_a: torch.Tensor, fake_b: torch.Tensor, z_a: torch.Tensor, z_b: torch.Tensor,
                       pool: int = 1) -> torch.Tensor:
    """MSGAN's ratio (Mao et al. 2019): mean |G(z_a, c) - G(z_b, c)| / mean |z_a - z_b| for the same captions; G's
    loss adds ``w / ratio`` so that ignoring z costs. With ``pool`` > 1 the images are compared after a
    ``pool`` x ``pool`` average pool: a generator can then no longer buy distance with pixel-scale texture
    (hatching that flips between draws) and must vary what survives the pool -- shape, silhouette, fill."""
    if pool > 1:
        fake_a, fake_b = F.avg_pool2d(fake_a, pool, ceil_mode=True), F.avg_pool2d(fake_b, pool, ceil_mode=True)
    return (fake_a - fake_b).abs().mean() / (z_a - z_b).abs().mean()


def hinge_real(scores: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """E[relu(1 - D)] over the samples where ``mask`` is true (all when None; 0 when none)."""
    return _masked_mean(F.relu(1.0 - scores), mask)


def hinge_fake(scores: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """E[relu(1 + D)] (fakes and mismatched pairs)."""
    return _masked_mean(F.relu(1.0 + scores), mask)


def _masked_mean(v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return v.mean()
    m = mask.to(v.dtype)
    return (v * m).sum() / m.sum().clamp(min=1.0)


def gradient_penalty(kind: str, scores: torch.Tensor, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Zero-centred gradient penalty of ``scores`` (N,) w.r.t. ``inputs`` (each requires_grad).

    ``r1``: 0.5 E||grad_x D(x, c)||^2 on real images (inputs = [image]).
    ``ma_gp``: E||(grad_x, grad_c) D(x, c)||^6 on real, matching pairs (inputs = [image, cond]).
    The returned value is the penalty before its weight (``model.gp_weight``).
    """
    if kind not in GP_KINDS or kind == "none":
        raise ValueError(f"gradient_penalty kind {kind!r}; choose one of {GP_KINDS[1:]}")
    grads = torch.autograd.grad(scores.sum(), list(inputs), create_graph=True)
    sq_norm = sum(g.flatten(1).pow(2).sum(1) for g in grads)
    if kind == "r1":
        return 0.5 * sq_norm.mean()
    return sq_norm.pow(MA_GP_POWER / 2).mean()  # ||g||^6 without sqrt (no NaN grad at 0)


def contrastive_loss(img: torch.Tensor, txt: torch.Tensor, same: torch.Tensor, temperature: float) -> torch.Tensor:
    """Image-to-caption InfoNCE over a batch (LAFITE, Zhou et al. 2022): image i must pick its own
    caption among the batch's. ``img``, ``txt``: unit-norm (N, D); ``same`` (N, N) bool marks pairs
    that share a class / caption: those off-diagonal entries are left out (not false negatives)."""
    logits = img @ txt.t() / float(temperature)
    eye = torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill(same.to(logits.device) & ~eye, float("-inf"))
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


# -- VAE --------------------------------------------------------------------------------------
def recon_nll(kind: str, x: torch.Tensor, out: torch.Tensor, log_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image reconstruction loss (N,), summed over pixels.

    Args:
        kind: ``mse`` (sum of squared errors), ``bce`` (Bernoulli on pixels mapped to [0,1];
            ``out`` are logits), ``gaussian`` / ``laplace`` (NLL in nats with scale exp(log_scale)).
        x: target images in [-1,1].
        out: decoder output (mean in [-1,1] space, or logits for bce).
        log_scale: broadcastable log std / log b for gaussian / laplace.
    """
    if kind == "mse":
        nll = (x - out).pow(2)
    elif kind == "bce":
        nll = F.binary_cross_entropy_with_logits(out, (x + 1) / 2, reduction="none")
    elif kind == "gaussian":
        nll = 0.5 * ((x - out) * torch.exp(-log_scale)).pow(2) + log_scale + 0.5 * math.log(2 * math.pi)
    elif kind == "laplace":
        nll = (x - out).abs() * torch.exp(-log_scale) + log_scale + math.log(2.0)
    else:
        raise ValueError(f"model.recon={kind!r} unknown; choose one of {RECON_KINDS}")
    return nll.flatten(1).sum(1)


def decoded_mean(kind: str, out: torch.Tensor) -> torch.Tensor:
    """The decoder's image (mean of p(x|z,c)) in [-1,1] space."""
    return torch.sigmoid(out) * 2 - 1 if kind == "bce" else out


def kl_normal(mu: torch.Tensor, logvar: torch.Tensor, prior_mu: torch.Tensor | None = None,
              prior_logvar: torch.Tensor | None = None) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(prior_mu, exp(prior_logvar))) per sample and latent dimension
    (N, D), in nats; the prior defaults to N(0, I)."""
    if prior_mu is None:
        return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)
    return 0.5 * (prior_logvar - logvar + (logvar.exp() + (mu - prior_mu).pow(2)) * torch.exp(-prior_logvar) - 1.0)
