"""Text-conditioned GAN: AdaGN generator, projection discriminator, hinge loss, matching-aware
training, optional R1 / MA-GP and DiffAugment; manual optimisation with two optimisers.

Steps: each training batch makes ``d_steps`` discriminator updates (same real batch, fresh noise
and augmentations) and then one generator update. **One step is one batch** for every family:
Lightning's ``global_step`` would count every ``optimizer.step()`` under manual optimisation
(``d_steps + 1`` per batch), so the discriminator's steps are not counted (``_uncounted``) and its
LR schedule (warm-up) steps once per batch too. ``trainer.max_steps``, checkpoint / grid / EMA
intervals and warm-ups therefore mean the same number of batches as for the diffusion model and
the VAE (a sweep over ``model=diffusion,gan,vae`` gives every family the same data).

Gradient clipping: Lightning refuses ``Trainer(gradient_clip_val>0)`` with manual optimisation,
so the module takes the trainer's value over (see ``configure_callbacks``) and clips each
optimiser itself; ``model.grad_clip`` overrides it.
"""

from __future__ import annotations


import functools
import logging
from typing import Annotated, Any, Callable

import torch
from torch import nn

from t2ilab.compat.lightning import attached_trainer, ddp_find_unused_parameters, uncounted_step
from t2ilab.choices import ADV_LOSSES, GP_KINDS
from t2ilab.models import options
from t2ilab.models.base import Generator, TextConditionedModule
from t2ilab.models.options import GANSampling, OptimizerOptions
from t2ilab.models.losses import (contrastive_loss, d_fake_loss, d_real_loss, g_adv_loss,
                                  gradient_penalty, mode_seeking_ratio)
from t2ilab.nets.diffaug import diff_augment, parse_policy
from t2ilab.utils.typecheck import OneOf, Range

log = logging.getLogger(__name__)

DEFAULT_OPTIMIZER = functools.partial(torch.optim.Adam, lr=2e-4, betas=(0.0, 0.9))


class GANModule(TextConditionedModule):
    """Args (plus those of ``TextConditionedModule``; its ``optimizer`` is unused):
        generator: partial generator constructor; called with ``channels, cond_dim, image_size, z_dim``.
        discriminator: partial discriminator constructor; called with ``channels, cond_dim, image_size``.
        optimizer_g / optimizer_d: partial optimisers (default Adam lr 2e-4, betas (0.0, 0.9)).
        z_dim: noise size.
        d_steps: discriminator updates per generator update (each batch).
        adv_loss: ``hinge`` (default) or ``ns`` (non-saturating logistic, as StyleGAN).
        mismatch_weight: weight of the (real image, wrong caption) -> fake term (0 = off).
            Wrong captions are the batch's captions rolled by one; pairs with the same class label
            (or the same caption) are left out. A projection discriminator (one with ``score(h, c)``)
            scores them from the real images' trunk features (same augmentation as the real term).
        gp: ``none`` | ``r1`` (0.5 E||grad_x D||^2 on reals) | ``ma_gp`` (DF-GAN: E||grad_(x,c) D||^6
            on real, matching pairs).
        gp_weight: weight of the gradient penalty (R1: gamma; DF-GAN uses 2 for MA-GP).
        gp_every: lazy regularisation (StyleGAN2, Karras et al. 2020): the penalty (its double backward)
            only on every ``gp_every``-th discriminator update, weighted ``gp_weight * gp_every`` so its
            gradient per update is the same in expectation; 1 = every update.
        diversity_weight: MSGAN mode-seeking weight (Mao et al. 2019; 0 = off): conditional
            generators tend to ignore z; costs +50% generator compute.
        diversity_pool: compare the two draws after this average pool (1 = pixels, as MSGAN): the pixel
            ratio rewards texture that flips between draws (the hatching of the CPU preset); 4 on 28 px
            images asks for variety at 7 x 7 -- shape and fill.
        contrastive_weight: weight of LAFITE's contrastive term (Zhou et al. 2022; 0 = off): D's
            image head must pick each real image's caption among the batch's (InfoNCE), and G is
            trained so that its fakes pick theirs: a direct "draw what the caption says" signal.
        contrastive_temperature: InfoNCE temperature.
        diffaug: DiffAugment policy, e.g. ``"color,translation,cutout"`` ("" = off).
        grad_clip: gradient-norm clip per optimiser; null = take ``trainer.gradient_clip_val``;
            0 = off.
        grad_clip_algorithm: ``norm`` or ``value``.
        sampling: ``generate`` defaults: ``truncation`` (null = none; t > 0 draws z from N(0, I)
            truncated to [-t, t] per coordinate, by inverse-CDF so per-sample seeds still hold).
    """

    family = "gan"
    sampling_options = GANSampling
    sampling_keys = options.keys(GANSampling)

    def __init__(self, generator: Callable[..., nn.Module], discriminator: Callable[..., nn.Module],
                 optimizer_g: Annotated[Callable | None, OptimizerOptions] = None,
                 optimizer_d: Annotated[Callable | None, OptimizerOptions] = None,
                 z_dim: Annotated[int, Range(ge=1)] = 128, d_steps: Annotated[int, Range(ge=1)] = 1,
                 adv_loss: Annotated[str, OneOf(ADV_LOSSES)] = "hinge",
                 mismatch_weight: Annotated[float, Range(ge=0)] = 0.5, gp: Annotated[str, OneOf(GP_KINDS)] = "none",
                 gp_weight: Annotated[float, Range(ge=0)] = 0.0, gp_every: Annotated[int, Range(ge=1)] = 1,
                 diversity_weight: Annotated[float, Range(ge=0)] = 0.0,
                 diversity_pool: Annotated[int, Range(ge=1)] = 1,
                 contrastive_weight: Annotated[float, Range(ge=0)] = 0.0,
                 contrastive_temperature: Annotated[float, Range(gt=0)] = 0.1, diffaug: str = "",
                 grad_clip: Annotated[float | None, Range(gt=0)] = None,
                 grad_clip_algorithm: Annotated[str, OneOf(("norm", "value"))] = "norm", **kwargs: Any):
        kwargs["sampling"] = {**options.defaults(GANSampling), **(kwargs.get("sampling") or {})}
        kwargs.setdefault("cond_drop_prob", 0.0)
        super().__init__(**kwargs)
        if int(d_steps) < 1:
            raise ValueError(f"model.d_steps={d_steps} must be >= 1")
        self.automatic_optimization = False
        self.z_dim, self.d_steps, self.mismatch_weight = int(z_dim), int(d_steps), float(mismatch_weight)
        self.gp, self.gp_weight, self.gp_every, self.adv_loss = gp, float(gp_weight), int(gp_every), adv_loss
        self.diffaug, self.diversity_weight = parse_policy(diffaug), float(diversity_weight)
        self.diversity_pool = int(diversity_pool)
        self.contrastive_weight, self.contrastive_temperature = float(contrastive_weight), float(contrastive_temperature)
        self.grad_clip, self.grad_clip_algorithm = grad_clip, grad_clip_algorithm
        self.optimizer_g, self.optimizer_d = optimizer_g or DEFAULT_OPTIMIZER, optimizer_d or DEFAULT_OPTIMIZER
        dims = dict(channels=self.channels, cond_dim=self.cond_dim, image_size=self.image_size)
        self.generator = generator(z_dim=self.z_dim, **dims)
        self.discriminator = discriminator(**dims, **({} if self.contrastive_weight > 0 else {"contrastive_dim": 0}))
        self.init_ema(self.generator)

    def compile_targets(self) -> list[nn.Module]:
        return [self.generator, self.discriminator]

    # -- noise and augmentation ------------------------------------------------------------------
    def sample_z(self, n: int, generator: Generator = None, truncation: float | None = None) -> torch.Tensor:
        """z ~ N(0, I) (n, z_dim); with ``truncation`` t > 0 each coordinate is mapped through the
        normal CDF into N(0,1) truncated to [-t, t] (same noise -> same truncated z)."""
        z = self.randn((n, self.z_dim), generator)
        if truncation is not None and float(truncation) > 0:
            lo = torch.special.ndtr(torch.tensor(-float(truncation), device=z.device))
            u = lo + torch.special.ndtr(z) * (1 - 2 * lo)
            z = torch.special.ndtri(u.clamp(lo, 1 - lo)).clamp(-float(truncation), float(truncation))
        return z

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, self.diffaug) if self.diffaug else x

    @staticmethod
    def same_pairs(batch: dict, cond: torch.Tensor) -> torch.Tensor:
        """(N, N) bool: do items i and j share a class label (else an identical caption)?"""
        ids = torch.unique(cond, dim=0, return_inverse=True)[1]  # caption id per row: no (N, N, D) compare
        same = ids[:, None] == ids[None, :]
        label = batch.get("label")
        return same | (label[:, None] == label[None, :]).to(same.device) if label is not None else same

    def contrastive(self, features: torch.Tensor, cond: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        d = self.discriminator
        return contrastive_loss(d.image_embedding(features), d.text_embedding(cond), same,
                                self.contrastive_temperature)

    # -- losses -----------------------------------------------------------------------------------
    def discriminator_loss(self, real: torch.Tensor, cond: torch.Tensor, same: torch.Tensor,
                           gen: nn.Module | None = None, train: bool = True,
                           penalise: bool = True) -> tuple[torch.Tensor, dict]:
        """Loss (``adv_loss``) of D on (real, caption) vs (G(z, caption), caption) and, weighted,
        (real, wrong caption); plus the gradient penalty (when ``penalise``: the lazy schedule's batches,
        weight ``gp_weight * gp_every``) and the contrastive term when ``train``. One batched D call.
        ``same``: ``same_pairs`` of the batch."""
        n, gen = real.shape[0], gen or self.generator
        with torch.no_grad():
            fake = gen(self.sample_z(n), cond)
        use_gp = train and penalise and self.gp != "none" and self.gp_weight > 0
        use_con = train and self.contrastive_weight > 0
        real_in = real.detach().requires_grad_(use_gp)
        cond_in = cond.detach().requires_grad_(use_gp and self.gp == "ma_gp")
        mismatch = ~same.roll(1, 1).diagonal()
        use_mis = self.mismatch_weight > 0  # (a batch of one caption: the mask is empty, the term 0; no host sync)
        # a projection D (``score(h, c)``) scores the mismatched pairs from the reals' trunk features: the same
        # images (and augmentations) under rolled captions, 2 trunk passes per batch instead of 3
        d = self.discriminator
        reuse = use_mis and hasattr(d, "score") and hasattr(d, "features")
        images = [real_in, fake] + ([real] if use_mis and not reuse else [])
        conds = [cond_in, cond.detach()] + ([cond.detach().roll(1, 0)] if use_mis else [])
        x = self.augment(torch.cat(images)) if train else torch.cat(images)
        if reuse:  # one head call over [real, fake, real] features (spectral norm iterates once per call)
            feats = d.features(x)
            scores = d.score(torch.cat([feats, feats[:n]]), torch.cat(conds))
        else:
            scores, feats = d(x, torch.cat(conds), return_features=True)
        s_real, s_fake = scores[:n], scores[n:2 * n]
        loss = d_real_loss(self.adv_loss, s_real) + d_fake_loss(self.adv_loss, s_fake)
        stats = {"d_real": s_real.mean(), "d_fake": s_fake.mean()}
        if not use_gp and penalise:  # no penalty configured: logged as 0 (lazily skipped batches log nothing)
            stats["gp"] = torch.zeros((), device=real.device)
        if not train:
            stats["fake_scores"] = s_fake
        if use_mis:
            loss = loss + self.mismatch_weight * d_fake_loss(self.adv_loss, scores[2 * n:], mismatch)
            stats["d_mismatch"] = (scores[2 * n:] * mismatch).sum() / mismatch.sum().clamp(min=1)
        if use_gp:
            gp = gradient_penalty(self.gp, s_real, [real_in, cond_in] if self.gp == "ma_gp" else [real_in])
            loss, stats["gp"] = loss + self.gp_weight * self.gp_every * gp, gp
        if use_con:
            con = self.contrastive(feats[:n], cond.detach(), same)
            loss, stats["d_contrastive"] = loss + self.contrastive_weight * con, con
        return loss, stats

    def generator_loss(self, cond: torch.Tensor, same: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Adversarial loss of G(z, c) (hinge: -E[D(G(z,c), c)]); with ``diversity_weight`` the first half of the captions is drawn twice
        (fresh z) and the MSGAN mode-seeking term w / (losses.mode_seeking_ratio + eps)
        penalises a generator whose output ignores z; with ``contrastive_weight`` the fakes must
        pick their own caption through D's contrastive heads."""
        n, h = cond.shape[0], cond.shape[0] // 2 if self.diversity_weight > 0 else 0
        cond = torch.cat([cond, cond[:h]])
        z = self.sample_z(n + h)
        fake = self.generator(z, cond)
        scores, feats = self.discriminator(self.augment(fake), cond, return_features=True)
        loss, stats = g_adv_loss(self.adv_loss, scores), {}
        if h:
            ratio = mode_seeking_ratio(fake[:h], fake[n:], z[:h], z[n:], self.diversity_pool)
            loss, stats["diversity"] = loss + self.diversity_weight / (ratio + 1e-5), ratio
        if self.contrastive_weight > 0:
            con = self.contrastive(feats[:n], cond[:n], same)
            loss, stats["g_contrastive"] = loss + self.contrastive_weight * con, con
        return loss, stats

    # -- training ---------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        sched_g, sched_d = self.lr_schedulers()
        real, n = batch["image"], batch["image"].shape[0]
        cond = self.drop_cond(self.prepare_cond(batch["cond"]))
        same = self.same_pairs(batch, cond)
        for i in range(self.d_steps):
            d_update = self.global_step * self.d_steps + i  # one step = one batch: a resume keeps the schedule
            with self.toggled_optimizer(opt_d):
                d_loss, stats = self.discriminator_loss(real, cond, same, penalise=d_update % self.gp_every == 0)
                with uncounted_step(opt_d):
                    self._update(opt_d, self.guard(d_loss, "train/d_loss"))
        with self.toggled_optimizer(opt_g):
            g_loss, g_stats = self.generator_loss(cond, same)
            self._update(opt_g, self.guard(g_loss, "train/g_loss"))
        sched_d.step()
        sched_g.step()
        self.update_ema()  # now, not at batch end: checkpoint callbacks of this batch run before that
        self.log("train/d_loss", d_loss.detach(), prog_bar=True, on_step=True, batch_size=n)
        self.log("train/g_loss", g_loss.detach(), prog_bar=True, on_step=True, batch_size=n)
        self.log_scalars({f"train/{k}": v for k, v in {**stats, **g_stats}.items()}, batch_size=n)

    def _update(self, opt: Any, loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.grad_clip:
            self.clip_gradients(opt, gradient_clip_val=float(self.grad_clip),
                                gradient_clip_algorithm=self.grad_clip_algorithm)
        opt.step()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """``val/loss`` = D's loss (``adv_loss``) on held-out (image, caption) pairs vs EMA-generator fakes
        (+ weighted held-out mismatches), no augmentation or penalty. It tracks the D/G balance
        (hinge: about 2 + mismatch_weight when D cannot tell; near 0 when D wins or overfits), not
        quality. ``val/g_loss``: G's adversarial loss on those fakes."""
        cond = self.prepare_cond(batch["cond"])
        with self.fixed_noise(batch_idx):
            loss, stats = self.discriminator_loss(batch["image"], cond, self.same_pairs(batch, cond),
                                                  gen=self.sampling_net, train=False)
        values = {"val/loss": loss, "val/d_real": stats["d_real"], "val/d_fake": stats["d_fake"],
                  "val/g_loss": g_adv_loss(self.adv_loss, stats["fake_scores"])}
        self.log_dict(values, on_step=False, on_epoch=True, sync_dist=True, batch_size=cond.shape[0])

    # -- optimisers -------------------------------------------------------------------------------
    def configure_optimizers(self) -> list[dict]:
        """[generator (+ null embedding), discriminator], each with the base's warm-up schedule."""
        g = self.make_optimizer(list(self.generator.parameters()) + [self.null_embedding], self.optimizer_g)
        d = self.make_optimizer(self.discriminator.parameters(), self.optimizer_d)
        g["lr_scheduler"]["name"], d["lr_scheduler"]["name"] = "lr/generator", "lr/discriminator"
        return [g, d]

    def configure_callbacks(self) -> list:
        """Take ``trainer.gradient_clip_val`` over before Lightning validates the trainer (it runs
        after this hook and rejects automatic clipping with manual optimisation): the GAN clips
        each optimiser itself with that value unless ``model.grad_clip`` is set."""
        trainer = attached_trainer(self)
        if trainer is not None and trainer.gradient_clip_val:
            if self.grad_clip is None:
                self.grad_clip = float(trainer.gradient_clip_val)
                self.grad_clip_algorithm = str(getattr(trainer.gradient_clip_algorithm, "value", None) or "norm")
            log.info("GAN (manual optimisation): trainer.gradient_clip_val=%s is applied by the module per "
                     "optimiser (model.grad_clip=%s)", trainer.gradient_clip_val, self.grad_clip)
            trainer.gradient_clip_val, trainer.gradient_clip_algorithm = None, None
        # DDP: the D steps leave G's parameters without gradients and the G step D's (toggled off), which
        # DDP's reducer refuses unless it looks for unused parameters (this hook runs before the wrap)
        if ddp_find_unused_parameters(trainer):
            log.info("GAN under DDP: find_unused_parameters=True (each optimiser's step leaves the other net unused)")
        return []

    # -- sampling ---------------------------------------------------------------------------------
    def _generate(self, net: nn.Module, cond: torch.Tensor, generator: Generator,
                  truncation: float | None = None) -> torch.Tensor:
        return net(self.sample_z(cond.shape[0], generator, truncation), cond)

    def edit(self, images01: torch.Tensor, cond: torch.Tensor, *, strength: float, generator: Generator = None,
             source_cond: torch.Tensor | None = None, **sampling: Any) -> torch.Tensor:
        """Text-guided edit of images in [0,1]: z fitted to each image under the source caption
        (``inversion_steps``, ``inversion_lr``), regenerated under ``lerp(source, cond, strength)``
        (editing/families.py ``gan_edit``); (N,C,H,W) in [0,1]."""
        from t2ilab.editing.families import gan_edit

        return gan_edit(self, images01, cond, strength=strength, generator=generator, source_cond=source_cond,
                        **sampling)[0]
