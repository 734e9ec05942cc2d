"""Differentiable CLIP(image, prompt) similarity and the diffusion guidance function built on it.

Why a second image path: :meth:`OpenCLIPEncoder.encode_image` runs under ``no_grad`` (it serves
metrics and caching). Guidance needs d cos(CLIP(image), CLIP(prompt)) / d image, so
:func:`clip_image_features` feeds the open_clip model directly — through the encoder's own
``_preprocess`` (same resize, centre crop and normalisation as the CLIP score, so the guiding
similarity is the one the metric would report) — with gradients enabled.

Guiding with the SAME CLIP that later scores the samples inflates the CLIP score (the samples are
optimised against that model, partly adversarially): report guided CLIP scores with another CLIP
model, or rely on model-independent metrics (prompt accuracy of the reference classifier).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, Callable

import torch
import torch.nn.functional as F

from t2ilab.encoders.errors import WeightsUnavailableError

log = logging.getLogger(__name__)

OPTION = "clip_guidance.model"
_ENCODER_KEYS = ("model_name", "pretrained", "checkpoint_path", "random_init", "seed", "model_cfg", "batch_size",
                 "dim", "name")


def build_clip(clip_cfg: Mapping[str, Any], cache_dir: str | os.PathLike | None, device: str | torch.device,
               option: str = OPTION) -> Any:
    """The guiding CLIP: an :class:`OpenCLIPEncoder` from a ``metrics.clip``-style node, loaded now
    (missing weights fail before any sample is generated, naming ``<option>.checkpoint_path``).

    Args:
        clip_cfg: model_name, pretrained, checkpoint_path, random_init, seed, model_cfg, batch_size.
        cache_dir: text-embedding cache root.
        device: where the CLIP model runs (the generator's device: gradients flow between them).
        option: the config key named in error messages.
    """
    from t2ilab.encoders.open_clip_encoder import OpenCLIPEncoder

    kwargs = {k: clip_cfg[k] for k in _ENCODER_KEYS if k in clip_cfg and clip_cfg[k] is not None}
    kwargs.setdefault("name", f"{option}:{kwargs.get('model_name', 'ViT-B-32')}")
    try:
        encoder = OpenCLIPEncoder(**kwargs, cache_dir=cache_dir, device=str(device))
        encoder.load()
    except WeightsUnavailableError as e:
        msg = str(e).replace("encoder.checkpoint_path", f"{option}.checkpoint_path")
        raise WeightsUnavailableError(f"guiding CLIP: {msg} (set {option}.checkpoint_path=/path/to/weights)") from e
    if kwargs.get("random_init"):
        log.warning("CLIP guidance uses a RANDOMLY initialised CLIP (%r): it steers toward nothing meaningful",
                    encoder)
    return encoder


def _unit_range(images: torch.Tensor) -> torch.Tensor:
    """[-1,1] -> [0,1] with a straight-through clamp: the forward value is clamped (CLIP sees the
    pixels that would be saved), the gradient passes as if unclamped. A plain clamp would zero the
    gradient of every out-of-range pixel — most of them in early, noisy predictions of x0 — and
    guidance could never pull them back."""
    x = images.float().add(1.0).div(2.0)
    return x + (x.clamp(0.0, 1.0) - x).detach()


def clip_image_features(clip: Any, images: torch.Tensor) -> torch.Tensor:
    """L2-normalised CLIP image embeddings (N, D) of images in [-1,1], differentiable w.r.t. ``images``.

    Args:
        clip: a loaded OpenCLIPEncoder (``build_clip``); its weights stay frozen.
        images: float (N,C,H,W) in [-1,1], C in {1,3}, any size.
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images (N,C,H,W) with C in {{1,3}}, got {tuple(images.shape)}")
    model = clip.load()
    x = clip._preprocess(_unit_range(images).to(clip.device))  # the CLIP score's exact preprocessing
    return F.normalize(model.encode_image(x).float(), dim=-1)


def clip_similarity(clip: Any, images: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """Per-image cosine similarity (N,) between images in [-1,1] and their prompts' CLIP text
    embeddings (row i with row i), differentiable w.r.t. ``images``.

    Args:
        clip: a loaded OpenCLIPEncoder.
        images: float (N,C,H,W) in [-1,1].
        text_features: (N, D) text embeddings of the same CLIP (``clip.encode_text``; normalised here).
    """
    if text_features.shape[0] != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {text_features.shape[0]} text embeddings")
    feats = clip_image_features(clip, images)
    return (feats * F.normalize(text_features.to(feats), dim=-1)).sum(-1)


class ClipGuidance:
    """Guidance function ``grad = fn(x0_pred, t)`` for ``DiffusionModule.guided_by``: the sampler
    moves its predicted clean sample by ``+grad`` at every denoising step.

    ``grad = scale * d sim / d x0`` with ``sim = clip_similarity(clip, to_images(x0), text_features)``
    summed over the batch (each sample's gradient depends only on itself). With ``normalize``
    (default) each sample's gradient is rescaled to unit RMS first, so ``scale`` is the RMS change
    of x0 per step in x0's units ([-1,1] pixels; latents for latent diffusion) — independent of how
    large a particular CLIP's raw gradients are (they differ by orders of magnitude between models
    and noise levels). Without it, ``scale`` multiplies the raw gradient.

    Args:
        clip: a loaded OpenCLIPEncoder (``build_clip``), on the model's device.
        text_features: (N, D) CLIP text embeddings of the batch's prompts (row i guides sample i).
        scale: step size (see above); 0 = no change.
        to_images: x0 -> images in [-1,1], differentiable (``model.x0_to_images``: identity for
            pixel diffusion, the decoder for latent diffusion); None = identity.
        normalize: rescale each sample's gradient to unit RMS.
    """

    def __init__(self, clip: Any, text_features: torch.Tensor, scale: float,
                 to_images: Callable[[torch.Tensor], torch.Tensor] | None = None, normalize: bool = True):
        self.clip, self.scale, self.normalize = clip, float(scale), bool(normalize)
        self.text_features = text_features.detach().float()
        self.to_images = to_images or (lambda x: x)
        self.history: list[torch.Tensor] = []  # mean similarity at each call (diagnostics, tests)

    def __call__(self, x0_pred: torch.Tensor, t: Any = None) -> torch.Tensor:
        """The x0 update (same shape/dtype as ``x0_pred``); ``t`` (the timestep) is not used."""
        if x0_pred.shape[0] != self.text_features.shape[0]:
            raise ValueError(f"CLIP guidance got {x0_pred.shape[0]} predictions for {self.text_features.shape[0]} "
                             "prompts (one text embedding per sample in the batch)")
        with torch.enable_grad():
            x0 = x0_pred.detach().float().requires_grad_(True)
            sim = clip_similarity(self.clip, self.to_images(x0), self.text_features.to(x0.device))
            (grad,) = torch.autograd.grad(sim.sum(), x0)
        self.history.append(sim.detach().mean().cpu())
        if self.normalize:
            rms = grad.flatten(1).square().mean(1).sqrt().clamp_min(1e-12)
            grad = grad / rms.view(-1, *([1] * (grad.dim() - 1)))
        return (self.scale * grad).to(x0_pred.dtype)
