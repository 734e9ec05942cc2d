"""The small interface every frozen encoder implements (text for conditioning, image for CLIP score)."""

from __future__ import annotations

import logging
from typing import Any, Protocol, runtime_checkable

import torch

log = logging.getLogger(__name__)


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


def warn_if_truncated(tokenizer: Any, captions: list[str]) -> int:
    """Warn (once per newly encoded caption) when a caption is longer than the encoder's context and
    will be cut; returns how many were. Tokenizers without ``encode``/``context_length`` are skipped."""
    encode, ctx = getattr(tokenizer, "encode", None), getattr(tokenizer, "context_length", None)
    if encode is None or not ctx:
        return 0
    over = [(c, len(encode(c)) + 2 - int(ctx)) for c in captions]  # + start/end tokens
    over = [(c, n) for c, n in over if n > 0]
    if over:
        worst = max(over, key=lambda x: x[1])
        log.warning("%d caption(s) exceed the text encoder's context of %d tokens and are cut (up to %d tokens "
                    "lost), e.g. %r", len(over), ctx, worst[1], worst[0][:120])
    return len(over)
