"""The small interface every frozen encoder implements (text for conditioning, image for CLIP score)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class TextEncoder(Protocol):
    """Frozen text(/image) encoder.

    ``encode_text`` returns float32 CPU tensors (N, dim), L2-normalised, computed under
    ``torch.no_grad`` in eval mode and served from the embedding cache when possible.
    ``fingerprint`` is a stable string identifying the weights + preprocessing: it is the
    cache key, so it must change whenever the embeddings would.
    """

    dim: int
    fingerprint: str

    def encode_text(self, captions: list[str]) -> torch.Tensor: ...

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """images: float (N,C,H,W) in [0,1] (C=1 or 3, any size) -> (N, dim) L2-normalised."""
        ...
