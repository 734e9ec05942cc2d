"""CLIP model for the CLIP score, configured independently of the conditioning encoder
(``metrics.clip``), built on :class:`t2ilab.encoders.open_clip_encoder.OpenCLIPEncoder`."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch

from t2ilab.encoders.errors import WeightsUnavailableError
from t2ilab.evaluation.fidelity import clip_scores

log = logging.getLogger(__name__)

OPTION = "metrics.clip.checkpoint_path"
_ENCODER_KEYS = ("model_name", "pretrained", "checkpoint_path", "random_init", "seed", "model_cfg", "batch_size",
                 "dim", "name")


class ClipScorer:
    """Per-image CLIP score of (image, prompt) pairs with a frozen open_clip model.

    Weights are resolved and loaded at construction (before any sample is generated), so a
    missing file fails the run early with :class:`WeightsUnavailableError` naming ``metrics.clip.*``.

    Args:
        clip_cfg: the ``metrics.clip`` mapping (model_name, pretrained, checkpoint_path, random_init, ...).
        cache_dir: text-embedding cache root (shared with the conditioning encoders).
        device: device of the CLIP model.
        required_for: the command that cannot run without this CLIP (e.g. the round trip's retrieval): the
            offline error then names only what works (a local checkpoint), not the metric switches.
    """

    def __init__(self, clip_cfg: Mapping[str, Any], cache_dir: str | os.PathLike | None, device: str | torch.device,
                 required_for: str | None = None):
        from t2ilab.encoders.open_clip_encoder import OpenCLIPEncoder  # heavy import, only when used

        kwargs = {k: clip_cfg[k] for k in _ENCODER_KEYS if k in clip_cfg and clip_cfg[k] is not None}
        kwargs.setdefault("name", f"metrics.clip:{kwargs.get('model_name', 'ViT-B-32')}")
        try:
            self.encoder = OpenCLIPEncoder(**kwargs, cache_dir=cache_dir, device=str(device))
            self.encoder.load()
        except WeightsUnavailableError as e:
            msg = str(e).replace("encoder.checkpoint_path", OPTION)
            if OPTION not in msg:
                msg += f" (CLIP score model: set {OPTION}=/path/to/weights)"
            if required_for:  # the command cannot work without this CLIP: the switches would not help
                raise WeightsUnavailableError(f"{required_for} needs a CLIP model: {msg}") from e
            raise WeightsUnavailableError(f"CLIP score: {msg}; or set metrics.clip_score=false / "
                                          f"metrics.skip_unavailable=true") from e
        self.name = repr(self.encoder)
        self.random_init = bool(kwargs.get("random_init"))
        if self.random_init:
            log.warning("CLIP score uses a RANDOMLY initialised CLIP (%s): its scores are meaningless", self.name)

    @property
    def fingerprint(self) -> str:
        """The CLIP weights/architecture fingerprint (recorded in metrics.json)."""
        return self.encoder.fingerprint

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """(N, D) text embeddings (through the encoder's on-disk cache).

        Args:
            prompts: one prompt per generated image.
        """
        unique = sorted(set(prompts))
        table = self.encoder.encode_text(unique)
        row = {p: i for i, p in enumerate(unique)}
        return table[torch.tensor([row[p] for p in prompts], dtype=torch.long)]

    def score(self, images: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Per-image scores (N,) float32 CPU for uint8 images (N,C,H,W) and their prompts' embeddings.

        Args:
            images: uint8 tensor (N, C, H, W) — the same pixels that are saved as PNG.
            text_emb: (N, D) embeddings of the prompts (``encode_prompts``).
        """
        image_emb = self.encoder.encode_image(images.float().div_(255.0))
        return clip_scores(image_emb, text_emb.to(image_emb))
