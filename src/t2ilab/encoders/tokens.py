"""Token-level text conditioning (``model.cond_type=tokens``): the pooled vector plus per-token states.

Why one packed tensor: every consumer of conditioning in t2ilab (datamodule tables, in-memory GPU
batches, sample grids, the evaluation engine, ``sample``, DDP batches) handles ``cond`` as one
(N, W) tensor: it is indexed by caption row, sliced into batches, moved across devices and
concatenated with the null condition for guidance. Packing keeps that contract and every one of
those paths unchanged; only the model unpacks. Layout of one row (``TokenLayout``)::

    [ pooled (dim) | token states (max_tokens x token_dim), zero padded | mask (max_tokens), 1 = valid ]

Token states are cached per caption (``TokenStateCache``: float16, trimmed to the caption's own
tokens), computed once per caption like the pooled embeddings; packing to ``max_tokens`` happens
when a table is built.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from t2ilab.encoders.cache import TokenStateCache

log = logging.getLogger(__name__)

from t2ilab.choices import COND_TYPES  # noqa: E402,F401  (one source of the choices)


class TokenLayout:
    """Packs / unpacks (pooled, tokens, mask) to and from one (N, width) float tensor."""

    def __init__(self, dim: int, token_dim: int, max_tokens: int):
        if token_dim <= 0 or max_tokens <= 0:
            raise ValueError(f"token layout needs token_dim > 0 and max_tokens > 0 (got {token_dim}, {max_tokens})")
        self.dim, self.token_dim, self.max_tokens = int(dim), int(token_dim), int(max_tokens)
        self.width = self.dim + self.max_tokens * (self.token_dim + 1)

    def pack(self, pooled: torch.Tensor, states: list[torch.Tensor]) -> torch.Tensor:
        """pooled (N, dim) + N token-state tensors (L_i, token_dim), cut to ``max_tokens``."""
        n, t = pooled.shape[0], self.max_tokens
        tokens = pooled.new_zeros(n, t, self.token_dim)
        mask = pooled.new_zeros(n, t)
        for i, s in enumerate(states):
            k = min(t, s.shape[0])
            tokens[i, :k] = s[:k].to(tokens.dtype)
            mask[i, :k] = 1.0
        return torch.cat([pooled, tokens.flatten(1), mask], dim=1)

    def unpack(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, width) -> pooled (N, dim), tokens (N, max_tokens, token_dim), mask bool (N, max_tokens)."""
        if cond.ndim != 2 or cond.shape[1] != self.width:
            raise ValueError(f"token conditioning must be (N, {self.width}) = pooled {self.dim} + {self.max_tokens} "
                             f"tokens x ({self.token_dim} + 1 mask), got {tuple(cond.shape)}")
        d, t = self.dim, self.max_tokens
        tokens = cond[:, d:d + t * self.token_dim].reshape(-1, t, self.token_dim)
        return cond[:, :d], tokens, cond[:, -t:] > 0.5


class TokenConditioning:
    """Wraps a text encoder so ``encode_text`` returns packed (pooled + token states) rows.

    The wrapped encoder must provide ``token_dim`` and ``text_tokens(captions) -> (states (B, L, D),
    mask (B, L))`` (uncached raw forward); pooled vectors still come from its own ``encode_text``
    (and its cache). Everything else is forwarded to the wrapped encoder.
    """

    def __init__(self, encoder: Any, max_tokens: int, batch_size: int | None = None):
        if not callable(getattr(encoder, "text_tokens", None)) or not getattr(encoder, "token_dim", 0):
            raise ValueError(f"model.cond_type=tokens needs per-token text states, but encoder "
                             f"{getattr(encoder, 'name', type(encoder).__name__)!r} provides only a pooled vector: "
                             "use model.cond_type=pooled, or an encoder with token states (encoder=clip_tiny, "
                             "clip_vit_b32, clip_vit_l14, hf_text)")
        self.encoder, self.max_tokens = encoder, int(max_tokens)
        self.layout = TokenLayout(encoder.dim, encoder.token_dim, self.max_tokens)
        self.batch_size = int(batch_size or getattr(encoder, "batch_size", 256))
        self._token_cache: TokenStateCache | None = None
        self._warned_long = False

    def __getattr__(self, name: str) -> Any:  # dim, token_dim, fingerprint, encode_image, load, ...
        if name == "encoder":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.encoder, name)

    @property
    def token_cache(self) -> TokenStateCache:
        if self._token_cache is None:
            meta = {"name": getattr(self.encoder, "name", None), "kind": "token_states",
                    "token_dim": self.encoder.token_dim, "pooled_fingerprint": self.encoder.fingerprint}
            self._token_cache = TokenStateCache(f"{self.encoder.fingerprint}-tokens",
                                                getattr(self.encoder, "cache_dir", None), meta=meta)
        return self._token_cache

    def token_states(self, captions: list[str]) -> list[torch.Tensor]:
        """float16 (L_i, token_dim) per caption (valid tokens only), each computed once per caption."""
        found, missing = self.token_cache.get_many(list(captions))
        if missing:
            new: dict[str, torch.Tensor] = {}
            for i in range(0, len(missing), self.batch_size):
                batch = missing[i:i + self.batch_size]
                states, mask = self.encoder.text_tokens(batch)
                for c, s, m in zip(batch, states, mask.bool()):
                    new[c] = s[m].to(torch.float16)
            self.token_cache.put_many(new)
            found.update(new)
        return [found[c] for c in captions]

    def encode_text(self, captions: list[str]) -> torch.Tensor:
        """(N, layout.width) float32 CPU packed rows (see the module docstring)."""
        if isinstance(captions, str):
            raise TypeError("encode_text expects a list of captions, not a single string")
        captions = list(captions)
        pooled = self.encoder.encode_text(captions).float()
        states = self.token_states(captions)
        longest = max((s.shape[0] for s in states), default=0)
        if longest > self.max_tokens and not self._warned_long:
            self._warned_long = True
            log.warning("captions have up to %d tokens but model.max_tokens=%d: later tokens are not seen by "
                        "cross-attention (raise model.max_tokens)", longest, self.max_tokens)
        return self.layout.pack(pooled, states)

    def __repr__(self) -> str:
        return f"TokenConditioning({self.encoder!r}, max_tokens={self.max_tokens})"
