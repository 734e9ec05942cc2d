"""Text-conditioned VAE: q(z|x,c), p(x|z,c) with a vector latent, beta-weighted KL with linear
warm-up and optional free bits, and a choice of pixel likelihoods (mse|bce|gaussian|laplace; the
last two with a learned scale, "sigma-VAE", Rybkin et al. 2021).

With ``model.net.latent=spatial`` (``model=autoencoder``) the same module trains the unconditional
spatial-latent autoencoder of latent diffusion (nets/vae_nets.py): same objective, a (C, h, w)
latent map, N(0, I) prior, a small ``beta``; ``encode_latents`` / ``decode_latents`` are what
models/latent_diffusion.py uses."""

from __future__ import annotations

from typing import Annotated, Any, Callable

import torch
from torch import nn

from t2ilab.models import options
from t2ilab.models.base import Generator, TextConditionedModule, to_unit_range
from t2ilab.models.losses import decoded_mean, kl_normal, recon_nll

from t2ilab.choices import LATENT_PRIOR_FRAMES, LATENT_PRIORS, PRIORS, RECON_KINDS, SCALES  # noqa: E402,F401  (one source of the choices)
from t2ilab.models.options import VAESampling
from t2ilab.utils.typecheck import OneOf, Range


class VAEModule(TextConditionedModule):
    """Args (plus those of ``TextConditionedModule``):
        net: partial ``VAENet`` constructor; called with ``channels, cond_dim, image_size, z_dim,
            scale_channels, conditional_prior``; its ``latent`` (``vector`` | ``spatial``) picks the mode.
        z_dim: latent size (``vector``; the spatial map's shape comes from ``net.latent_channels`` and
            ``net.downsample``).
        prior: ``standard`` N(0, I) or ``conditional`` p(z|c) = N(mu(c), sigma(c)^2) learned from
            the caption (Sohn et al. 2015). With a standard prior the encoder can store the class
            in z and the decoder then ignores the caption; the learned prior keeps samples on-class.
        recon: pixel likelihood: ``mse`` (sum of squared errors), ``bce`` (Bernoulli on [0,1]
            pixels), ``gaussian`` / ``laplace`` (learned scale; NLL in nats).
        scale: learned scale per ``channel`` or one ``scalar`` (gaussian / laplace only).
        min_scale: floor of the learned scale (in [-1,1] pixel units): keeps the NLL bounded.
        beta: weight of the KL term (1 = the ELBO).
        kl_warmup_steps: beta ramps linearly from 0 to ``beta`` over this many steps (0 = off).
        free_bits: nats per latent dimension below which the (batch-mean) KL is not penalised
            (Kingma et al. 2016; 0 = off): fights posterior collapse.
        active_threshold: a latent dimension is "active" when its batch-mean KL exceeds this (nats).
        latent_prior: ``none`` (sample z from the Gaussian p(z|c)) or ``diffusion``: a small conditional
            diffusion model fitted to the posterior latents during training (models/latent_prior.py), so
            samples come from where the decoder was trained; ``latent_prior_width`` / ``_depth`` size its MLP.
        latent_prior_frame: the Gaussian the prior's latents are whitened by, u = (z - mu) / sigma:
            ``caption`` (p(z|c) of each row's caption: the prior learns only what that Gaussian misses, but
            its caption-free branch lives in another frame, so ``prior_guidance`` is not guidance proper) or
            ``shared`` (p(z|null caption) for every row: one frame for all captions, in which the caption-free
            branch is the marginal and ``prior_guidance`` is classifier-free guidance as in DALL-E 2's prior).
        sampling: ``generate`` defaults: ``temperature`` T (z = mu(c) + T sigma(c) eps; 0 = the
            prior mean, deterministic; with the latent prior, T scales its sampler's initial noise),
            ``prior_steps`` (DDIM steps of the latent prior) and ``prior_guidance`` (its classifier-free
            guidance scale; 1 = none).

    KL terms (free bits, ``active_dims``) are per latent element: per dimension of the vector, per
    (channel, position) of the spatial map.
    """

    family = "vae"
    sampling_options = VAESampling
    sampling_keys = options.keys(VAESampling)

    def __init__(self, net: Callable[..., nn.Module], z_dim: Annotated[int, Range(ge=1)] = 64,
                 prior: Annotated[str, OneOf(PRIORS)] = "conditional",
                 recon: Annotated[str, OneOf(RECON_KINDS)] = "gaussian", scale: Annotated[str, OneOf(SCALES)] = "channel",
                 min_scale: Annotated[float, Range(gt=0)] = 0.01, beta: Annotated[float, Range(ge=0)] = 1.0,
                 kl_warmup_steps: Annotated[int, Range(ge=0)] = 0, free_bits: Annotated[float, Range(ge=0)] = 0.0,
                 active_threshold: float = 0.01, latent_prior: Annotated[str, OneOf(LATENT_PRIORS)] = "none",
                 latent_prior_width: Annotated[int, Range(ge=8)] = 256,
                 latent_prior_depth: Annotated[int, Range(ge=1)] = 3,
                 latent_prior_frame: Annotated[str, OneOf(LATENT_PRIOR_FRAMES)] = "caption", **kwargs: Any):
        kwargs["sampling"] = {**options.defaults(VAESampling), **(kwargs.get("sampling") or {})}
        kwargs.setdefault("cond_drop_prob", 0.05)
        super().__init__(**kwargs)
        self.z_dim, self.recon, self.beta = int(z_dim), recon, float(beta)
        self.kl_warmup_steps, self.free_bits = int(kl_warmup_steps), float(free_bits)
        self.active_threshold = float(active_threshold)
        self.min_log_scale = float(torch.log(torch.tensor(min_scale)))
        learned = recon in ("gaussian", "laplace")
        scale_channels = (self.channels if scale == "channel" else 1) if learned else 0
        if latent_prior not in LATENT_PRIORS:
            raise ValueError(f"model.latent_prior={latent_prior!r}: expected one of {LATENT_PRIORS}")
        if latent_prior_frame not in LATENT_PRIOR_FRAMES:
            raise ValueError(f"model.latent_prior_frame={latent_prior_frame!r}: expected one of {LATENT_PRIOR_FRAMES}")
        self.latent_prior_frame = latent_prior_frame
        extra = {}
        if latent_prior == "diffusion":
            from t2ilab.models.latent_prior import DiffusionPrior

            extra["latent_prior"] = DiffusionPrior(self.z_dim, self.cond_dim, latent_prior_width, latent_prior_depth)
        self.vae = net(channels=self.channels, cond_dim=self.cond_dim, image_size=self.image_size,
                       z_dim=self.z_dim, scale_channels=scale_channels, conditional_prior=prior == "conditional",
                       **extra)
        if self.spatial:  # the autoencoder ignores captions: keep the unused null embedding out of
            self.null_embedding.requires_grad_(False)  # the optimiser (and DDP's unused-parameter check)
        self.init_ema(self.vae)

    @property
    def spatial(self) -> bool:
        """Whether this is the spatial-latent autoencoder (``model.net.latent=spatial``)."""
        return getattr(self.vae, "latent", "vector") == "spatial"

    @property
    def latent_prior_net(self) -> nn.Module | None:
        """The learned latent prior (``model.latent_prior=diffusion``) of the training net, or None."""
        return getattr(self.vae, "latent_prior", None)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one latent: ``(z_dim,)`` or ``(latent_channels, h, w)``."""
        return tuple(self.vae.latent_shape)

    # -- objective --------------------------------------------------------------------------------
    def current_beta(self) -> float:
        if self.kl_warmup_steps <= 0:
            return self.beta
        return self.beta * min(1.0, self.global_step / self.kl_warmup_steps)

    def elbo_terms(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(batch-mean reconstruction NLL, batch-mean KL per latent element (*latent_shape), the latent prior's
        loss on the detached posterior samples (0 without one))."""
        mu, logvar = self.vae.encode(x, cond)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        out = self.vae.decode(z, cond)
        log_scale = self.vae.log_scale.clamp(min=self.min_log_scale) if self.vae.log_scale is not None else None
        mu_p, logvar_p = self.vae.prior(cond)
        kl = kl_normal(mu, logvar, mu_p, logvar_p)
        prior_loss = z.new_zeros(())
        if self.latent_prior_net is not None:  # fits u = (z - mu) / sigma in its frame; no gradient to the VAE
            mu_f, logvar_f = (mu_p, logvar_p) if self.latent_prior_frame == "caption" else self.vae.prior(self._frame_cond(cond))
            u = ((z - mu_f) * torch.exp(-0.5 * logvar_f)).detach()
            prior_loss = self.latent_prior_net.loss(u, cond.detach())
        return recon_nll(self.recon, x, out, log_scale).mean(), kl.mean(0), prior_loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        cond = self.drop_cond(self.prepare_cond(batch["cond"]))
        recon, kl_dims, prior_loss = self.elbo_terms(batch["image"], cond)
        kl = self.guard(kl_dims.sum(), "train/kl")
        kl_term = kl_dims.clamp(min=self.free_bits).sum() if self.free_bits > 0 else kl
        beta = self.current_beta()
        loss = self.guard(self.guard(recon, "train/recon") + beta * kl_term, "train/loss")
        n = cond.shape[0]
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, batch_size=n)
        values = {"train/recon": recon, "train/kl": kl, "train/beta": torch.tensor(beta),
                  "train/active_dims": (kl_dims > self.active_threshold).sum()}
        if self.latent_prior_net is not None:  # train/loss stays the VAE's objective; the prior's is its own
            values["train/prior_loss"] = self.guard(prior_loss, "train/prior_loss")
            loss = loss + prior_loss
        if self.vae.log_scale is not None:
            values["train/scale"] = self.vae.log_scale.clamp(min=self.min_log_scale).exp().mean()
        self.log_scalars(values, batch_size=n)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """``val/loss`` = the negative ELBO (recon + KL, beta = 1, no free bits) on held-out pairs:
        comparable across beta / warm-up / free-bits settings of the same ``recon``."""
        with self.fixed_noise(batch_idx):
            recon, kl_dims, prior_loss = self.elbo_terms(batch["image"], self.prepare_cond(batch["cond"]))
        kl = kl_dims.sum()
        values = {"val/loss": recon + kl, "val/recon": recon, "val/kl": kl,
                  "val/active_dims": (kl_dims > self.active_threshold).sum().float()}
        if self.latent_prior_net is not None:
            values["val/prior_loss"] = prior_loss
        self.log_dict(values, on_step=False, on_epoch=True, sync_dist=True, batch_size=batch["image"].shape[0])

    # -- inference --------------------------------------------------------------------------------
    def _generate(self, net: nn.Module, cond: torch.Tensor, generator: Generator, temperature: float = 1.0,
                  prior_steps: int = 25, prior_guidance: float = 1.0) -> torch.Tensor:
        learned = getattr(net, "latent_prior", None) is not None
        mu, logvar = net.prior(self._frame_cond(cond) if learned else cond)
        eps = self.randn((cond.shape[0], *net.latent_shape), generator) * float(temperature)
        if learned:
            eps = net.latent_prior.sample(eps, cond, self.null_cond(cond.shape[0]), generator, self.randn,
                                          num_steps=int(prior_steps), guidance_scale=float(prior_guidance))
        z = mu + eps * torch.exp(0.5 * logvar)
        return decoded_mean(self.recon, net.decode(z, cond))

    def _frame_cond(self, cond: torch.Tensor) -> torch.Tensor:
        """The caption rows whose Gaussian whitens the latent prior's z (``latent_prior_frame``): each row's
        own (``caption``) or the null caption for every row (``shared``)."""
        return cond if self.latent_prior_frame == "caption" else self.null_cond(cond.shape[0]).to(cond.dtype)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Decode the posterior mean of images ``x`` ([-1,1], N,C,H,W) with the sampling (EMA)
        net: (N,C,H,W) in [0,1], for inspecting what the latent keeps."""
        c = self.prepare_cond(cond)
        with self.sampling_mode() as net:
            mu, _ = net.encode(x.to(self.device, torch.float32), c)
            out = decoded_mean(self.recon, net.decode(mu, c))
        return to_unit_range(out)

    def edit(self, images01: torch.Tensor, cond: torch.Tensor, *, strength: float, generator: Generator = None,
             source_cond: torch.Tensor | None = None, **sampling: Any) -> torch.Tensor:
        """Text-guided edit of images in [0,1]: posterior latent of the source caption replayed under
        ``lerp(source, cond, strength)`` (editing/families.py ``vae_edit``); (N,C,H,W) in [0,1]."""
        from t2ilab.editing.families import vae_edit

        return vae_edit(self, images01, cond, strength=strength, generator=generator, source_cond=source_cond,
                        **sampling)[0]

    # -- latent diffusion interface (spatial autoencoder) ----------------------------------------
    def _spatial_net(self, net: nn.Module | None) -> nn.Module:
        if not self.spatial:
            raise ValueError("encode_latents / decode_latents need the spatial autoencoder (model.net.latent=spatial, "
                             "e.g. model=autoencoder); this VAE has a vector latent")
        return self.sampling_net if net is None else net

    @torch.no_grad()
    def encode_latents(self, x: torch.Tensor, net: nn.Module | None = None) -> torch.Tensor:
        """Posterior means (N, *latent_shape) of images ``x`` (N,C,H,W) in [-1,1], with ``net`` (default:
        the sampling (EMA) net; put it in eval mode yourself). Computed on ``x``'s device."""
        return self._spatial_net(net).encode(x, None)[0]

    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor, net: nn.Module | None = None) -> torch.Tensor:
        """Images (N,C,H,W) in [-1,1] space (not clamped) decoded from latents ``z`` (N, *latent_shape)."""
        return decoded_mean(self.recon, self._spatial_net(net).decode(z, None))
