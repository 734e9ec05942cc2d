"""The nested option nodes of a model that are plain mappings, not constructor calls: ``ema``, the family's
``sampling`` defaults (what ``generate`` uses when a call does not say) and the optimiser partials (a torch
class, not ours). One definition each — types, ranges and defaults — read by the modules (defaults, the
keys ``generate`` accepts) and by the config check (utils/model_schema.py). Import-light: no torch."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from t2ilab.choices import GUIDES, SAMPLER_NAMES
from t2ilab.utils.typecheck import choices, setting


@dataclasses.dataclass
class EMAOptions:
    enabled: bool = setting(True)
    decay: float = setting(0.999, ge=0, lt=1)
    warmup: bool = setting(True)  # decay ramps up as (1+t)/(10+t)
    every_n_steps: int = setting(1, ge=1)


@dataclasses.dataclass
class OptimizerOptions:
    """What the model configs set on their ``torch.optim`` partials (torch's own options, checked here)."""

    lr: float = setting(2e-4, gt=0)
    weight_decay: float = setting(0.0, ge=0)
    betas: Optional[list[float]] = setting(None, example="[0.9,0.999]")
    eps: float = setting(1e-8, gt=0)


def interval_problem(value: Any) -> str | None:
    """What is wrong with a ``sampling.guidance_interval`` (None = fine): [lo, hi] with 0 <= lo <= hi."""
    try:
        lo, hi = (float(v) for v in value)
        if not any(isinstance(v, bool) for v in value) and 0.0 <= lo <= hi:
            return None
    except (TypeError, ValueError):
        pass
    return "must be [lo, hi] noise levels sigma with 0 <= lo <= hi (null = guide at every step)"


@dataclasses.dataclass
class DiffusionSampling:
    sampler: choices("Sampler", SAMPLER_NAMES) = setting("ddim")  # type: ignore[valid-type]
    num_steps: int = setting(50, ge=1)
    guidance_scale: float = setting(2.0, ge=0)
    eta: float = setting(0.0, ge=0, le=1)
    clip_x0: bool = setting(False)
    guidance_interval: Optional[list[float]] = setting(None, example="[0.3,5.0]", check=interval_problem)  # sigma range of CFG; null = all steps
    guide: choices("Guide", GUIDES) = setting("cfg")  # type: ignore[valid-type]  # the weak branch: null caption or guide_ckpt
    guide_ckpt: Optional[str] = setting(None, example="<run>/checkpoints/step=0001000.ckpt")  # autoguidance's weaker model


@dataclasses.dataclass
class GANSampling:
    truncation: Optional[float] = setting(None, gt=0)


@dataclasses.dataclass
class VAESampling:
    temperature: float = setting(1.0, gt=0)
    prior_steps: int = setting(25, ge=1)  # DDIM steps of model.latent_prior=diffusion
    prior_guidance: float = setting(1.0, ge=0)  # its classifier-free guidance scale (1 = none)


def defaults(options: type) -> dict[str, Any]:
    """The defaults of an options dataclass as a plain dict (Enum choices as their strings)."""
    out = {}
    for f in dataclasses.fields(options):
        v = f.default
        out[f.name] = getattr(v, "value", v)
    return out


def keys(options: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(options))
