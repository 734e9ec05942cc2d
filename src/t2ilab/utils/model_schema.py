"""Per-family schemas of the ``model`` group (see utils/schema.py for how they are checked).

Choice fields are Enums built from the model modules' own tuples, so the list a user is shown is
the list the module implements."""

from __future__ import annotations

import dataclasses
from typing import Optional, Union

from t2ilab.choices import (ADV_LOSSES, COND_TYPES, GP_KINDS, LATENTS, LOSS_WEIGHTINGS, LR_DECAYS, PREDICTIONS, PRIORS,
                            RECON_KINDS, SAMPLER_NAMES, SCALES, SCHEDULES)
from t2ilab.utils.schema import _ex, choices


@dataclasses.dataclass
class EMASchema:
    enabled: bool = _ex("true")
    decay: float = _ex(0.999, ge=0, lt=1)
    warmup: bool = _ex("true")
    every_n_steps: int = _ex(1, ge=1)


@dataclasses.dataclass
class OptimizerSchema:
    lr: float = _ex(2e-4, gt=0)
    weight_decay: float = _ex(0.0, ge=0)
    betas: Optional[list[float]] = _ex("[0.9,0.999]")
    eps: float = _ex(1e-8, gt=0)


@dataclasses.dataclass
class CommonModelSchema:
    image_size: int = _ex(32, ge=4)
    channels: int = _ex(3, ge=1)
    cond_drop_prob: float = _ex(0.1, ge=0, lt=1)
    center_cond: bool = _ex("true")
    cond_type: choices("CondType", COND_TYPES) = _ex("tokens")  # type: ignore[valid-type]
    max_tokens: int = _ex(32, ge=1)
    cond_noise: float = _ex(0.1, ge=0)
    lr_warmup_steps: int = _ex(500, ge=0)
    lr_decay: choices("LRDecay", LR_DECAYS) = _ex("cosine")  # type: ignore[valid-type]
    lr_min_ratio: float = _ex(0.1, ge=0, le=1)
    ema: EMASchema = _ex(None)


@dataclasses.dataclass
class UNetSchema:
    base_channels: int = _ex(64, ge=1)
    channel_mult: list[int] = _ex("[1,2,2]")
    num_res_blocks: int = _ex(2, ge=0)
    attn_resolutions: list[int] = _ex("[8]")
    cross_attention_resolutions: Optional[list[int]] = _ex("[16,8]")
    heads: int = _ex(4, ge=1)
    dropout: float = _ex(0.1, ge=0, lt=1)
    patch_size: int = _ex(1, ge=1)


@dataclasses.dataclass
class DiffusionSamplingSchema:
    sampler: choices("Sampler", SAMPLER_NAMES) = _ex("dpm_solver++")  # type: ignore[valid-type]
    num_steps: int = _ex(50, ge=1)
    guidance_scale: float = _ex(2.0, ge=0)
    eta: float = _ex(0.0, ge=0, le=1)
    clip_x0: bool = _ex("false")


@dataclasses.dataclass
class DiffusionSchema(CommonModelSchema):
    schedule: choices("Schedule", sorted(SCHEDULES)) = _ex("cosine")  # type: ignore[valid-type]
    prediction: choices("Prediction", PREDICTIONS) = _ex("v_prediction")  # type: ignore[valid-type]
    num_train_timesteps: int = _ex(1000, ge=2)
    loss_weighting: choices("LossWeighting", LOSS_WEIGHTINGS) = _ex("min_snr")  # type: ignore[valid-type]
    min_snr_gamma: float = _ex(5.0, gt=0)
    optimizer: OptimizerSchema = _ex(None)
    net: UNetSchema = _ex(None)
    sampling: DiffusionSamplingSchema = _ex(None)


@dataclasses.dataclass
class GeneratorSchema:
    base_channels: int = _ex(32)
    max_channels: int = _ex(256)
    emb_dim: int = _ex(128)
    num_res_blocks: int = _ex(1)
    spectral_norm: bool = _ex("false")
    cond_input: bool = _ex("false")
    identity_init: bool = _ex("true")
    output: choices("GeneratorOutput", ("clamp", "linear", "tanh")) = _ex("clamp")  # type: ignore[valid-type]


@dataclasses.dataclass
class DiscriminatorSchema:
    base_channels: int = _ex(32)
    max_channels: int = _ex(256)
    spectral_norm: bool = _ex("true")
    contrastive_dim: int = _ex(128)
    mbstd_group: int = _ex(0)


@dataclasses.dataclass
class GANSamplingSchema:
    truncation: Optional[float] = _ex(1.0, gt=0)


@dataclasses.dataclass
class GANSchema(CommonModelSchema):
    z_dim: int = _ex(128, ge=1)
    adv_loss: choices("AdvLoss", ADV_LOSSES) = _ex("hinge")  # type: ignore[valid-type]
    d_steps: int = _ex(1, ge=1)
    mismatch_weight: float = _ex(0.5, ge=0)
    gp: choices("GradientPenalty", GP_KINDS) = _ex("r1")  # type: ignore[valid-type]
    gp_weight: float = _ex(1.0, ge=0)
    diversity_weight: float = _ex(0.0, ge=0)
    contrastive_weight: float = _ex(0.0, ge=0)
    contrastive_temperature: float = _ex(0.1, gt=0)
    diffaug: str = _ex("color,translation")
    grad_clip: Optional[float] = _ex(1.0, gt=0)
    grad_clip_algorithm: choices("ClipAlgorithm", ("norm", "value")) = _ex("norm")  # type: ignore[valid-type]
    optimizer_g: OptimizerSchema = _ex(None)
    optimizer_d: OptimizerSchema = _ex(None)
    generator: GeneratorSchema = _ex(None)
    discriminator: DiscriminatorSchema = _ex(None)
    sampling: GANSamplingSchema = _ex(None)


@dataclasses.dataclass
class VAENetSchema:
    base_channels: int = _ex(32)
    max_channels: int = _ex(256)
    emb_dim: int = _ex(128)
    num_res_blocks: int = _ex(1)
    latent: choices("Latent", LATENTS) = _ex("spatial")  # type: ignore[valid-type]
    latent_channels: int = _ex(4)
    downsample: int = _ex(4)


@dataclasses.dataclass
class VAESamplingSchema:
    temperature: float = _ex(1.0, gt=0)


@dataclasses.dataclass
class VAESchema(CommonModelSchema):
    z_dim: int = _ex(64, ge=1)
    prior: choices("Prior", PRIORS) = _ex("conditional")  # type: ignore[valid-type]
    recon: choices("Recon", RECON_KINDS) = _ex("gaussian")  # type: ignore[valid-type]
    scale: choices("Scale", SCALES) = _ex("channel")  # type: ignore[valid-type]
    min_scale: float = _ex(0.01, gt=0)
    beta: float = _ex(1.0, ge=0)
    kl_warmup_steps: int = _ex(1000, ge=0)
    free_bits: float = _ex(0.0, ge=0)
    active_threshold: float = _ex(0.01)
    optimizer: OptimizerSchema = _ex(None)
    net: VAENetSchema = _ex(None)
    sampling: VAESamplingSchema = _ex(None)


@dataclasses.dataclass
class LatentDiffusionSchema(DiffusionSchema):
    autoencoder_ckpt: str = _ex("<autoencoder run_dir>/checkpoints/last.ckpt")
    scale_factor: Union[float, choices("ScaleFactor", ("auto",))] = _ex("auto")  # type: ignore[valid-type]


BY_TARGET: dict[str, type] = {
    "t2ilab.models.diffusion.DiffusionModule": DiffusionSchema,
    "t2ilab.models.gan.GANModule": GANSchema,
    "t2ilab.models.vae.VAEModule": VAESchema,
    "t2ilab.models.latent_diffusion.LatentDiffusionModule": LatentDiffusionSchema,
}
