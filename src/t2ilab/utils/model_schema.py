"""Per-family schemas of the ``model`` group (checked by utils/schema.validate with utils/typecheck.py).

Choice fields are Enums built from the model modules' own tuples, so the list a user is shown is
the list the module implements."""

from __future__ import annotations

import dataclasses
from typing import Optional, Union

from t2ilab.choices import (ADV_LOSSES, COND_TYPES, GP_KINDS, LATENTS, LOSS_WEIGHTINGS, LR_DECAYS, PREDICTIONS, PRIORS,
                            RECON_KINDS, SAMPLER_NAMES, SCALES, SCHEDULES)
from t2ilab.utils.typecheck import choices, option


@dataclasses.dataclass
class EMASchema:
    enabled: bool = option("true")
    decay: float = option(0.999, ge=0, lt=1)
    warmup: bool = option("true")
    every_n_steps: int = option(1, ge=1)


@dataclasses.dataclass
class OptimizerSchema:
    lr: float = option(2e-4, gt=0)
    weight_decay: float = option(0.0, ge=0)
    betas: Optional[list[float]] = option("[0.9,0.999]")
    eps: float = option(1e-8, gt=0)


@dataclasses.dataclass
class CommonModelSchema:
    image_size: int = option(32, ge=4)
    channels: int = option(3, ge=1)
    cond_drop_prob: float = option(0.1, ge=0, lt=1)
    center_cond: bool = option("true")
    cond_type: choices("CondType", COND_TYPES) = option("tokens")  # type: ignore[valid-type]
    max_tokens: int = option(32, ge=1)
    cond_noise: float = option(0.1, ge=0)
    lr_warmup_steps: int = option(500, ge=0)
    lr_decay: choices("LRDecay", LR_DECAYS) = option("cosine")  # type: ignore[valid-type]
    lr_min_ratio: float = option(0.1, ge=0, le=1)
    ema: EMASchema = option(None)


@dataclasses.dataclass
class UNetSchema:
    base_channels: int = option(64, ge=1)
    channel_mult: list[int] = option("[1,2,2]")
    num_res_blocks: int = option(2, ge=0)
    attn_resolutions: list[int] = option("[8]")
    cross_attention_resolutions: Optional[list[int]] = option("[16,8]")
    heads: int = option(4, ge=1)
    dropout: float = option(0.1, ge=0, lt=1)
    patch_size: int = option(1, ge=1)


@dataclasses.dataclass
class DiffusionSamplingSchema:
    sampler: choices("Sampler", SAMPLER_NAMES) = option("dpm_solver++")  # type: ignore[valid-type]
    num_steps: int = option(50, ge=1)
    guidance_scale: float = option(2.0, ge=0)
    eta: float = option(0.0, ge=0, le=1)
    clip_x0: bool = option("false")


@dataclasses.dataclass
class DiffusionSchema(CommonModelSchema):
    schedule: choices("Schedule", sorted(SCHEDULES)) = option("cosine")  # type: ignore[valid-type]
    prediction: choices("Prediction", PREDICTIONS) = option("v_prediction")  # type: ignore[valid-type]
    num_train_timesteps: int = option(1000, ge=2)
    loss_weighting: choices("LossWeighting", LOSS_WEIGHTINGS) = option("min_snr")  # type: ignore[valid-type]
    min_snr_gamma: float = option(5.0, gt=0)
    optimizer: OptimizerSchema = option(None)
    net: UNetSchema = option(None)
    sampling: DiffusionSamplingSchema = option(None)


@dataclasses.dataclass
class GeneratorSchema:
    base_channels: int = option(32)
    max_channels: int = option(256)
    emb_dim: int = option(128)
    num_res_blocks: int = option(1)
    spectral_norm: bool = option("false")
    cond_input: bool = option("false")
    identity_init: bool = option("true")
    output: choices("GeneratorOutput", ("clamp", "linear", "tanh")) = option("clamp")  # type: ignore[valid-type]


@dataclasses.dataclass
class DiscriminatorSchema:
    base_channels: int = option(32)
    max_channels: int = option(256)
    spectral_norm: bool = option("true")
    contrastive_dim: int = option(128)
    mbstd_group: int = option(0)


@dataclasses.dataclass
class GANSamplingSchema:
    truncation: Optional[float] = option(1.0, gt=0)


@dataclasses.dataclass
class GANSchema(CommonModelSchema):
    z_dim: int = option(128, ge=1)
    adv_loss: choices("AdvLoss", ADV_LOSSES) = option("hinge")  # type: ignore[valid-type]
    d_steps: int = option(1, ge=1)
    mismatch_weight: float = option(0.5, ge=0)
    gp: choices("GradientPenalty", GP_KINDS) = option("r1")  # type: ignore[valid-type]
    gp_weight: float = option(1.0, ge=0)
    diversity_weight: float = option(0.0, ge=0)
    contrastive_weight: float = option(0.0, ge=0)
    contrastive_temperature: float = option(0.1, gt=0)
    diffaug: str = option("color,translation")
    grad_clip: Optional[float] = option(1.0, gt=0)
    grad_clip_algorithm: choices("ClipAlgorithm", ("norm", "value")) = option("norm")  # type: ignore[valid-type]
    optimizer_g: OptimizerSchema = option(None)
    optimizer_d: OptimizerSchema = option(None)
    generator: GeneratorSchema = option(None)
    discriminator: DiscriminatorSchema = option(None)
    sampling: GANSamplingSchema = option(None)


@dataclasses.dataclass
class VAENetSchema:
    base_channels: int = option(32)
    max_channels: int = option(256)
    emb_dim: int = option(128)
    num_res_blocks: int = option(1)
    latent: choices("Latent", LATENTS) = option("spatial")  # type: ignore[valid-type]
    latent_channels: int = option(4)
    downsample: int = option(4)


@dataclasses.dataclass
class VAESamplingSchema:
    temperature: float = option(1.0, gt=0)


@dataclasses.dataclass
class VAESchema(CommonModelSchema):
    z_dim: int = option(64, ge=1)
    prior: choices("Prior", PRIORS) = option("conditional")  # type: ignore[valid-type]
    recon: choices("Recon", RECON_KINDS) = option("gaussian")  # type: ignore[valid-type]
    scale: choices("Scale", SCALES) = option("channel")  # type: ignore[valid-type]
    min_scale: float = option(0.01, gt=0)
    beta: float = option(1.0, ge=0)
    kl_warmup_steps: int = option(1000, ge=0)
    free_bits: float = option(0.0, ge=0)
    active_threshold: float = option(0.01)
    optimizer: OptimizerSchema = option(None)
    net: VAENetSchema = option(None)
    sampling: VAESamplingSchema = option(None)


@dataclasses.dataclass
class LatentDiffusionSchema(DiffusionSchema):
    autoencoder_ckpt: str = option("<autoencoder run_dir>/checkpoints/last.ckpt")
    scale_factor: Union[float, choices("ScaleFactor", ("auto",))] = option("auto")  # type: ignore[valid-type]


BY_TARGET: dict[str, type] = {
    "t2ilab.models.diffusion.DiffusionModule": DiffusionSchema,
    "t2ilab.models.gan.GANModule": GANSchema,
    "t2ilab.models.vae.VAEModule": VAESchema,
    "t2ilab.models.latent_diffusion.LatentDiffusionModule": LatentDiffusionSchema,
}
