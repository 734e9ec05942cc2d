"""CLIP-guided generation for every family behind the one generation path.

``models.generation.iter_generate`` only hands ``generate`` the conditioning rows of a batch (and
one generator per row), which is what keeps every image independent of batching and sharding.
Guidance also needs each row's CLIP text embedding, so :class:`ClipGuidedModel` carries it IN the
row: ``pack`` appends the guiding CLIP's text embedding to the conditioning, ``generate`` splits
it off again. Everything else (seeds, batching, sample writer, prompts.jsonl) stays the same;
the guidance settings appear in the recorded sampling options (``clip_guidance``).

Per family:
* diffusion / latent diffusion: ``with model.guided_by(ClipGuidance(...))`` around the model's own
  sampler (the sampler moves its predicted x0 by the CLIP gradient at every step);
* GAN / VAE: :func:`~t2ilab.guidance.latent_opt.clip_optimise_latents`.
"""

from __future__ import annotations

from typing import Any

import torch

from t2ilab.guidance.clip_guidance import ClipGuidance
from t2ilab.guidance.latent_opt import FAMILIES, clip_optimise_latents
from t2ilab.models.base import Generator
from t2ilab.models.generation import model_device


def supports_guidance(model: Any) -> bool:
    """Whether ``model`` can be CLIP-guided (a diffusion sampler with ``guided_by`` or a GAN/VAE)."""
    return hasattr(model, "guided_by") or getattr(model, "family", None) in FAMILIES


class ClipGuidedModel:
    """A model whose ``generate`` is CLIP-guided; rows are ``[cond | clip text embedding]`` (``pack``).

    Args:
        model: any t2ilab model (see ``supports_guidance``).
        clip: the guiding OpenCLIPEncoder (``build_clip``), on the model's device.
        scale: guidance strength (0 = unguided; see ClipGuidance / clip_optimise_latents).
        normalize: diffusion: unit-RMS gradient per sample (``scale`` = x0 step size).
        steps: GAN/VAE: Adam steps on the latent.
        lr: GAN/VAE: Adam learning rate.
        pull: GAN/VAE: weight of the L2 pull toward the initial latent.
    """

    def __init__(self, model: Any, clip: Any, scale: float, normalize: bool = True, steps: int = 20,
                 lr: float = 0.05, pull: float = 0.1):
        if not supports_guidance(model):
            raise ValueError(f"clip_guidance: the {getattr(model, 'family', type(model).__name__)} model cannot be "
                             "guided (diffusion needs DiffusionModule.guided_by; GAN/VAE optimise their latent)")
        self.model, self.clip, self.scale = model, clip, float(scale)
        self.normalize, self.steps, self.lr, self.pull = bool(normalize), int(steps), float(lr), float(pull)
        self.family = getattr(model, "family", None)
        self.cond_width: int | None = None
        settings: dict[str, Any] = {"scale": self.scale, "clip": repr(clip), "clip_fingerprint": clip.fingerprint}
        if hasattr(model, "guided_by"):
            settings["normalize"] = self.normalize
        else:
            settings.update(steps=self.steps, lr=self.lr, pull=self.pull)
        # recorded with the sampling options (prompts.jsonl) but never passed to the model's generate
        self.sampling_defaults = {**dict(getattr(model, "sampling_defaults", {}) or {}), "clip_guidance": settings}

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    def pack(self, cond: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """(N, cond_width + D) rows: conditioning followed by the guiding CLIP's text embedding."""
        if cond.shape[0] != text_features.shape[0]:
            raise ValueError(f"{cond.shape[0]} conditioning rows but {text_features.shape[0]} CLIP text embeddings")
        self.cond_width = int(cond.shape[1])
        return torch.cat([cond.float(), text_features.to(cond.device, torch.float32)], dim=1)

    def generate(self, rows: torch.Tensor, *, generator: Generator = None, **sampling: Any) -> torch.Tensor:
        """Guided images (N,C,H,W) in [0,1] for packed ``rows`` (see ``pack``)."""
        if self.cond_width is None:
            raise RuntimeError("call pack(cond, text_features) first: rows must carry the CLIP text embeddings")
        cond, text = rows[:, :self.cond_width], rows[:, self.cond_width:]
        return guided_generate(self.model, cond, text, self.clip, self.scale, generator, normalize=self.normalize,
                               steps=self.steps, lr=self.lr, pull=self.pull, **sampling)


def guided_generate(model: Any, cond: torch.Tensor, text_features: torch.Tensor, clip: Any, scale: float,
                    generator: Generator = None, *, normalize: bool = True, steps: int = 20, lr: float = 0.05,
                    pull: float = 0.1, **sampling: Any) -> torch.Tensor:
    """One guided batch: images (N,C,H,W) in [0,1] (``scale`` 0 = ``model.generate`` exactly).

    Args:
        model: the t2ilab model.
        cond: (N, cond_width) conditioning rows.
        text_features: (N, D) guiding-CLIP text embeddings of the same prompts.
        clip: the guiding OpenCLIPEncoder.
        scale: guidance strength.
        generator: one generator or one per row.
        normalize: diffusion: unit-RMS gradients.
        steps: GAN/VAE: Adam steps.
        lr: GAN/VAE: Adam learning rate.
        pull: GAN/VAE: L2 pull weight.
        **sampling: the family's ``generate`` options.
    """
    if float(scale) == 0:
        return model.generate(cond, generator=generator, **sampling)
    if hasattr(model, "guided_by"):
        guide = ClipGuidance(clip, text_features, scale, getattr(model, "x0_to_images", None), normalize)
        with model.guided_by(guide):
            return model.generate(cond, generator=generator, **sampling)
    return clip_optimise_latents(model, cond, text_features, clip, steps, lr, generator, scale=scale, pull=pull,
                                 **sampling)
