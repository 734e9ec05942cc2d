"""Text-conditioned diffusion (DDPM training; DDIM / DPM-Solver++ / Euler / DDPM sampling with
classifier-free guidance; SDEdit; an x0-guidance hook).

Noise schedules and samplers come from diffusers (a well-kept library): ``DDPMScheduler`` for
training-time noising and v-targets; ``generate`` and ``edit`` run the scheduler named by
``sampling.sampler`` (models/samplers.py: the table, trailing timestep spacing, the shared loop).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Annotated, Any, Callable, Iterator

import torch
from diffusers import DDPMScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from torch import nn

from t2ilab.models import options
from t2ilab.models.base import Generator, TextConditionedModule, to_unit_range
from t2ilab.models.options import DiffusionSampling
from t2ilab.models.samplers import (WeakBranch, X0Guidance, build_scheduler, check_guide, check_interval, denoise,
                                    get_sampler, initial_noise, noised_and_target, truncate)

from t2ilab.choices import LOSS_WEIGHTINGS, PARAMETERIZATIONS, PREDICTIONS, SCHEDULES  # noqa: E402,F401  (one source of the choices)
from t2ilab.utils.typecheck import OneOf, Range


class DiffusionModule(TextConditionedModule):
    """Args (plus those of ``TextConditionedModule``):
        net: partial denoiser constructor; called with ``channels, cond_dim, image_size``.
        schedule: ``cosine`` (Nichol & Dhariwal) or ``linear`` (Ho et al.) beta schedule.
        prediction: ``epsilon`` or ``v_prediction`` (Salimans & Ho; better at low step counts).
        num_train_timesteps: length of the training noise schedule.
        loss_weighting: ``none`` (plain MSE on the prediction target) or ``min_snr`` (Hang et al.
            2023, "Efficient Diffusion Training via Min-SNR Weighting": per-timestep weight
            min(SNR, gamma) / SNR in epsilon terms, which down-weights the low-noise steps that
            polish texture and converges faster on layout and shape).
        min_snr_gamma: the gamma of ``min_snr`` (5 in the paper).
        parameterization: ``vp`` (the network predicts ``prediction`` at uniformly drawn timesteps) or
            ``edm`` (Karras et al. 2022, models/edm.py: preconditioned denoiser, log-normal training noise
            ``edm_p_mean`` / ``edm_p_std``, data scale ``sigma_data``; samples with every sampler as ``vp``;
            ``prediction`` does not apply: the wrapper hands the samplers epsilon).
        sampling: defaults of ``generate`` / ``edit``: ``sampler`` (``ddim`` | ``dpm_solver++`` |
            ``euler`` | ``ddpm``, models/samplers.py), ``num_steps`` (sampler steps), ``guidance_scale``
            (1 = no guidance; w in eps_u + w (eps_c - eps_u)), ``eta`` (0 = deterministic DDIM; > 0
            picks the stochastic variant of dpm_solver++ / euler; ddpm is always stochastic),
            ``clip_x0`` (clamp the predicted x0 to [-1, 1] at every step and recompute the noise
            prediction from it, so the update stays consistent; see ``sampler``),
            ``guidance_interval`` (``[lo, hi]``: guide only at noise levels sigma in (lo, hi],
            Kynkäänniemi et al. 2024; null = every step; ``samplers.check_interval``), ``guide``
            (``cfg``: the null caption is the weak branch; ``autoguidance``, Karras et al. 2024: the
            conditional output of ``guide_ckpt``, a weaker model of the same kind — an earlier
            checkpoint of the run — is, ``guide_model``).
    """

    family = "diffusion"
    token_conditioning = True  # the UNet reads token states through cross-attention
    sampling_options = DiffusionSampling
    sampling_keys = options.keys(DiffusionSampling)
    _x0_guidance: X0Guidance | None = None  # set by ``guided_by`` for its block

    def __init__(self, net: Callable[..., nn.Module], schedule: Annotated[str, OneOf(SCHEDULES)] = "cosine",
                 prediction: Annotated[str, OneOf(PREDICTIONS)] = "epsilon",
                 num_train_timesteps: Annotated[int, Range(ge=2)] = 1000,
                 loss_weighting: Annotated[str, OneOf(LOSS_WEIGHTINGS)] = "none",
                 min_snr_gamma: Annotated[float, Range(gt=0)] = 5.0,
                 parameterization: Annotated[str, OneOf(PARAMETERIZATIONS)] = "vp",
                 sigma_data: Annotated[float, Range(gt=0)] = 0.5, edm_p_mean: float = -1.2,
                 edm_p_std: Annotated[float, Range(gt=0)] = 1.2, **kwargs: Any):
        kwargs["sampling"] = {**options.defaults(DiffusionSampling), **(kwargs.get("sampling") or {})}
        super().__init__(**kwargs)
        get_sampler(self.sampling_defaults["sampler"])  # an unknown sampler fails at construction
        self._guides: dict[str, DiffusionModule] = {}  # autoguidance guides by path (plain dict: not submodules)
        self.check_sampling(self.sampling_defaults, load_guide=False)  # a guide is loaded when first used
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"model.loss_weighting={loss_weighting!r}: expected one of {LOSS_WEIGHTINGS}")
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"model.parameterization={parameterization!r}: expected one of {PARAMETERIZATIONS}")
        if parameterization == "edm":
            if loss_weighting != "none":
                raise ValueError("model.parameterization=edm brings its own loss weight: set model.loss_weighting=none "
                                 f"(got {loss_weighting})")
            prediction = "epsilon"  # what the EDM wrapper hands the samplers; F's own target is EDM's
        self.prediction, self.loss_weighting, self.min_snr_gamma = prediction, loss_weighting, float(min_snr_gamma)
        self.parameterization, self.edm_p_mean, self.edm_p_std = parameterization, float(edm_p_mean), float(edm_p_std)
        self.noise_scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps,
                                             beta_schedule=SCHEDULES[schedule], prediction_type=prediction,
                                             clip_sample=False)
        self.net = net(channels=self.sample_shape[0], cond_dim=self.cond_dim, image_size=self.sample_shape[-1],
                       **self.net_cond_kwargs())
        if parameterization == "edm":  # the wrapper returns epsilon at the VP input: samplers need no change
            from t2ilab.models.edm import EDMPrecond

            self.net = EDMPrecond(self.net, self.noise_scheduler.alphas_cumprod, sigma_data)
        self.init_ema(self.net)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """What the denoiser runs on: the image (latent diffusion: the autoencoder's latent map)."""
        return self.image_shape

    # -- training -----------------------------------------------------------------------------
    def diffusion_loss(self, x0: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if self.parameterization == "edm":
            return self.net.loss(x0, cond, self.edm_p_mean, self.edm_p_std)
        n = x0.shape[0]
        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (n,), device=x0.device)
        noise = torch.randn_like(x0)
        acp = self.noise_scheduler.alphas_cumprod.to(x0.device)[t].view(n, 1, 1, 1)
        x_t, target = noised_and_target(x0, noise, acp, self.prediction)
        err = (self.net(x_t, t, cond).float() - target.float()).square().mean(dim=(1, 2, 3))
        if self.loss_weighting == "min_snr":  # v-loss = (SNR + 1) x eps-loss, eps-loss = SNR x x0-loss
            snr = (acp / (1 - acp)).view(n).float()
            err = err * snr.clamp(max=self.min_snr_gamma) / (snr + 1 if self.prediction == "v_prediction" else snr)
        return err.mean()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        cond = self.drop_cond(self.prepare_cond(batch["cond"]))
        loss = self.guard(self.diffusion_loss(batch["image"], cond), "train/loss")
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False, batch_size=cond.shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        with self.fixed_noise(batch_idx):  # same timesteps/noise in every run: comparable val/loss
            loss = self.diffusion_loss(batch["image"], self.prepare_cond(batch["cond"]))
        self.log("val/loss", loss, prog_bar=True, on_step=False, on_epoch=True, sync_dist=True,
                 batch_size=batch["image"].shape[0])

    # -- sampling -----------------------------------------------------------------------------
    def sampler(self, num_steps: int, clip_x0: bool = False, *, eta: float = 0.0, name: str = "ddim") -> SchedulerMixin:
        """Sampler ``name`` (models/samplers.py) over the training schedule (same betas, same
        ``prediction_type``), trailing spacing, timesteps set for ``num_steps``.

        Never clip x0 alone: diffusers' ``clip_sample`` clamps the predicted x0 but (unless the step
        gets ``use_clipped_model_output=True``) keeps the unclipped noise prediction, so x_{t-1} is
        built from an inconsistent (x0, eps) pair. Guidance makes the predicted x0 overshoot
        [-1, 1] at high noise, the clamp removes exactly the guided part and the kept eps drags the
        sample off the data. Measured on Fashion-MNIST (docs/families.md): prompt accuracy at
        guidance 3 was 52 % that way, 92 % without clipping, 91 % with consistent clipping
        (``clip_x0``: DDIM with ``use_clipped_model_output``, the other samplers clamp x0 and
        re-derive the model output in the loop, models/samplers.py).
        """
        return build_scheduler(name, self.noise_scheduler.config, num_steps, eta=eta, clip_x0=clip_x0,
                               device=self.device)

    def _generate(self, net: nn.Module, cond: torch.Tensor, generator: Generator, num_steps: int = 50,
                  guidance_scale: float = 2.0, eta: float = 0.0, clip_x0: bool = False,
                  sampler: str = "ddim", guidance_interval: Any = None, guide: str = "cfg",
                  guide_ckpt: str | None = None) -> torch.Tensor:
        n = cond.shape[0]
        x = self.randn((n, *self.sample_shape), generator)
        sched = self.sampler(num_steps, clip_x0, eta=eta, name=sampler)
        return denoise(self, net, sched, initial_noise(sched, x), sched.timesteps, cond, self.null_cond(n), generator,
                       sampler=sampler, guidance_scale=guidance_scale, eta=eta, clip_x0=clip_x0,
                       guidance_interval=guidance_interval, weak=self._weak_branch(cond, guide, guide_ckpt))

    # -- autoguidance -----------------------------------------------------------------------------
    def _weak_branch(self, cond: torch.Tensor, guide: str, guide_ckpt: str | None) -> WeakBranch | None:
        """None for classifier-free guidance; for ``autoguidance`` the guide's conditional output on ``cond``
        (prepared by this model; re-prepared for the guide, which may centre captions differently)."""
        check_guide(guide, guide_ckpt)
        if guide == "cfg":
            return None
        weak = self.guide_model(str(guide_ckpt))
        weak_cond = weak.prepare_cond(self.raw_cond(cond))
        net = weak.sampling_net
        return lambda x_t, t: net(x_t, t, weak_cond)

    def check_sampling(self, opts: dict, load_guide: bool = True) -> None:
        """Rules across ``generate`` options, checked at construction (the defaults) and before any sample is
        drawn (``utils.schema.check_sampling``): the guidance interval, and an autoguidance guide that names a
        checkpoint — with ``load_guide``, a loadable, compatible one."""
        check_interval(opts.get("guidance_interval"))
        check_guide(opts.get("guide", "cfg"), opts.get("guide_ckpt"))
        if load_guide and opts.get("guide") == "autoguidance":
            self.guide_model(str(opts["guide_ckpt"]))

    def guide_model(self, path: str) -> DiffusionModule:
        """The autoguidance guide in ``path`` (loaded once per path, EMA weights, eval mode, on this model's
        device; never a submodule: not saved with this model). It must denoise the same space on the same
        noise schedule: same family, sample shape, prediction type and training schedule."""
        from t2ilab.models.checkpoint import load_model

        if path not in self._guides:
            if not os.path.isfile(path):
                raise ValueError(f"sampling.guide_ckpt={path!r} is not a file: give a checkpoint of a weaker model of "
                                 "this kind (e.g. an earlier <run>/checkpoints/step=....ckpt of the same run)")
            guide, _ = load_model(path, map_location="cpu")
            why = self._guide_mismatch(guide)
            if why is not None:
                raise ValueError(f"sampling.guide_ckpt={path!r} cannot guide this model: {why}")
            self._guides[path] = guide.to(self.device).eval().requires_grad_(False)
        return self._guides[path].to(self.device)

    def _guide_mismatch(self, guide: Any) -> str | None:
        if type(guide) is not type(self):
            return f"it is a {type(guide).__name__}, this model a {type(self).__name__}"
        if guide.sample_shape != self.sample_shape or guide.cond_width != self.cond_width:
            return (f"sample shape {guide.sample_shape} / condition width {guide.cond_width} differ from this model's "
                    f"{self.sample_shape} / {self.cond_width}")
        if guide.prediction != self.prediction or not torch.equal(
                guide.noise_scheduler.alphas_cumprod, self.noise_scheduler.alphas_cumprod):
            return "it was trained with another prediction type or noise schedule"
        return None

    # -- SDEdit and x0 guidance -----------------------------------------------------------------
    @torch.no_grad()
    def edit(self, images: torch.Tensor, cond: torch.Tensor, *, strength: float, generator: Generator = None,
             source_cond: torch.Tensor | None = None, **sampling: Any) -> torch.Tensor:
        """SDEdit (Meng et al. 2022): images (N,C,H,W) in [0,1] re-generated towards captions ``cond``.

        The input (in sample space: latents for latent diffusion) is noised to the timestep of the
        last ``ceil(strength * num_steps)`` sampler steps (diffusers' img2img ``get_timesteps``) and
        denoised from there with ``cond`` and classifier-free guidance, EMA weights, eval mode.
        ``strength`` in (0, 1]: small keeps the input, 1 ignores it (pure noise: exactly ``generate``
        with the same generators). ``source_cond`` (the source caption's embeddings) replaces the
        null condition as the unconditional branch of guidance ("guidance toward the difference":
        out_src + w (out_new - out_src)); it has no effect at ``guidance_scale`` 1. Noise is drawn
        per sample from ``generator`` as in ``generate``; ``sampling`` overrides the defaults.
        Returns (N,C,H,W) in [0,1].
        """
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 < strength <= 1.0:
            raise ValueError(f"strength={strength!r} must be a number in (0, 1] (1 = ignore the input)")
        bad = set(sampling) - set(self.sampling_keys)
        if bad:
            raise TypeError(f"{self.family}.edit got unknown options {sorted(bad)}; valid: {list(self.sampling_keys)}")
        n = cond.shape[0]
        if images.ndim != 4 or images.shape[0] != n or tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"images must be ({n}, {', '.join(map(str, self.image_shape))}) in [0, 1] (one per "
                             f"caption), got {tuple(images.shape)}")
        opts = {**self.sampling_defaults, **sampling}
        with self.sampling_mode() as net:
            c = self.prepare_cond(cond)
            u = self.null_cond(n) if source_cond is None else self.prepare_cond(source_cond)
            if u.shape != c.shape:
                raise ValueError(f"source_cond must match cond's shape {tuple(c.shape)}, got {tuple(u.shape)}")
            noise = self.randn((n, *self.sample_shape), generator)  # first draw, as in generate
            sched = self.sampler(opts["num_steps"], opts["clip_x0"], eta=opts["eta"], name=opts["sampler"])
            timesteps = truncate(sched, float(strength))
            if len(timesteps) == len(sched.timesteps):  # strength 1 (or ceil = all steps): pure noise
                x = initial_noise(sched, noise)
            else:
                x0 = self._to_sample_space(images.to(self.device, torch.float32) * 2.0 - 1.0)
                x = sched.add_noise(x0, noise, timesteps[:1].expand(n))
            x = denoise(self, net, sched, x, timesteps, c, u, generator, sampler=opts["sampler"],
                        guidance_scale=opts["guidance_scale"], eta=opts["eta"], clip_x0=opts["clip_x0"],
                        guidance_interval=opts["guidance_interval"],
                        weak=self._weak_branch(c, opts["guide"], opts["guide_ckpt"]))
        return to_unit_range(self.x0_to_images(x))

    def _to_sample_space(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1,1] -> what the denoiser runs on (identity; latent diffusion encodes)."""
        return images

    def x0_to_images(self, x0: torch.Tensor) -> torch.Tensor:
        """Sample space -> images in [-1,1] (unclamped), differentiable (identity; latent diffusion
        decodes): what an x0-guidance function applies to the x0 it is given."""
        return x0

    @contextmanager
    def guided_by(self, fn: X0Guidance) -> Iterator[DiffusionModule]:
        """x0 guidance for the ``with`` block: at every step of ``generate`` and ``edit``, after
        classifier-free guidance, ``grad = fn(x0, t)`` is called with the predicted x0 (detached, in
        sample space; ``self.x0_to_images`` maps it to pixels differentiably) and the training timestep
        ``t`` (int), and the model output is shifted so that the predicted x0 becomes x0 + grad (the
        math: ``samplers.shift_prediction``). ``fn`` returns a tensor like x0, already scaled, or
        None; sampling runs under ``torch.no_grad``, so ``fn`` enables grad itself. Nests; restored
        on exit."""
        prev = self._x0_guidance
        object.__setattr__(self, "_x0_guidance", fn)  # never registered as a submodule, even if fn is one
        try:
            yield self
        finally:
            object.__setattr__(self, "_x0_guidance", prev)
