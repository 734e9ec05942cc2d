"""Conditioning shared by every family (a mixin of ``TextConditionedModule``): centring, the learned
null condition (classifier-free guidance / caption dropout), token conditioning and the LAFITE
perturbation of language-free training.

``cond_type=pooled``: ``cond`` is (N, cond_dim), one pooled text (or image) embedding per sample.
``cond_type=tokens``: ``cond`` is the packed (N, W) row of ``encoders/tokens.py`` (pooled vector,
per-token states, mask); only the pooled part is centred, and the null condition is the learned
null vector plus ONE learned null token. Families whose networks cannot read tokens refuse it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from t2ilab.encoders.tokens import COND_TYPES, TokenLayout


class ConditioningMixin:
    """Needs ``nn.Module``; call ``_init_conditioning`` from ``__init__`` after ``super().__init__()``."""

    token_conditioning = False  # families whose networks read token states (cross-attention) set True

    def _init_conditioning(self, cond_dim: int, cond_drop_prob: float, center_cond: bool, cond_type: str,
                           token_dim: int, max_tokens: int, cond_noise: float) -> None:
        if not 0.0 <= cond_drop_prob < 1.0:
            raise ValueError(f"model.cond_drop_prob={cond_drop_prob} must be in [0, 1)")
        if cond_type not in COND_TYPES:
            raise ValueError(f"model.cond_type={cond_type!r}: expected one of {COND_TYPES}")
        if cond_type == "tokens" and not self.token_conditioning:
            raise ValueError(f"model.cond_type=tokens: the {self.family} family conditions on the pooled vector "
                             "only (its networks have no cross-attention): set model.cond_type=pooled, or use "
                             "model=diffusion / latent_diffusion for token conditioning")
        if cond_type == "tokens" and int(token_dim) <= 0:
            raise ValueError("model.cond_type=tokens but the encoder provides no token states (token_dim=0): "
                             "use model.cond_type=pooled or an encoder with token states")
        if cond_noise < 0:
            raise ValueError(f"model.cond_noise={cond_noise} must be >= 0 (LAFITE uses 0.1-0.3)")
        self.cond_dim, self.cond_drop_prob, self.center_cond = int(cond_dim), float(cond_drop_prob), bool(center_cond)
        self.cond_type, self.cond_noise = cond_type, float(cond_noise)
        self.token_dim = int(token_dim) if cond_type == "tokens" else 0
        self.max_tokens = int(max_tokens) if cond_type == "tokens" else 0
        self.layout = TokenLayout(self.cond_dim, self.token_dim, self.max_tokens) if self.token_dim else None
        self.null_embedding = nn.Parameter(torch.zeros(self.cond_dim))
        if self.layout is not None:
            self.null_token = nn.Parameter(torch.zeros(self.token_dim))
        self.register_buffer("cond_mean", torch.zeros(self.cond_dim))
        self.register_buffer("cond_mean_set", torch.tensor(False))

    @property
    def cond_width(self) -> int:
        """Columns of one conditioning row (cond_dim, or the packed token layout's width)."""
        return self.layout.width if self.layout is not None else self.cond_dim

    def net_cond_kwargs(self) -> dict:
        """What a token-reading network needs to unpack the conditioning rows."""
        return {"token_dim": self.token_dim, "max_tokens": self.max_tokens} if self.layout is not None else {}

    def set_cond_mean(self, table: torch.Tensor) -> None:
        """Store the mean of the training caption embeddings (pooled part; once; kept across resumes)."""
        if self.center_cond and not bool(self.cond_mean_set):
            self.cond_mean.copy_(table[:, :self.cond_dim].float().mean(0).to(self.cond_mean.device))
            self.cond_mean_set.fill_(True)

    def perturb(self, pooled: torch.Tensor) -> torch.Tensor:
        """LAFITE (Zhou et al. 2022): h + xi ||h|| eps/||eps||, re-normalised, so image embeddings used
        for training cover the region text embeddings of the same content fall into."""
        eps = torch.randn_like(pooled)
        h = pooled + self.cond_noise * pooled.norm(dim=1, keepdim=True) * F.normalize(eps, dim=1)
        return F.normalize(h, dim=1) * pooled.norm(dim=1, keepdim=True)

    def prepare_cond(self, cond: torch.Tensor) -> torch.Tensor:
        cond = cond.to(self.null_embedding.device, torch.float32)
        if cond.ndim != 2 or cond.shape[1] != self.cond_width:
            what = (f"packed token conditioning rows (pooled {self.cond_dim} + {self.max_tokens} tokens, "
                    "model.cond_type=tokens)" if self.layout is not None else "text embeddings")
            raise ValueError(f"cond must be (N, {self.cond_width}) {what}, got {tuple(cond.shape)}; was the model "
                             "trained with a different encoder or model.cond_type?")
        pooled = cond[:, :self.cond_dim]
        if self.training and self.cond_noise > 0:
            pooled = self.perturb(pooled)
        if self.center_cond:
            pooled = pooled - self.cond_mean
        return pooled if self.layout is None else torch.cat([pooled, cond[:, self.cond_dim:]], dim=1)

    def raw_cond(self, prepared: torch.Tensor) -> torch.Tensor:
        """The inverse of ``prepare_cond`` outside training (no perturbation): the encoder's rows, e.g. to
        prepare them for another model (autoguidance's guide)."""
        if not self.center_cond:
            return prepared
        pooled = prepared[:, :self.cond_dim] + self.cond_mean
        return pooled if self.layout is None else torch.cat([pooled, prepared[:, self.cond_dim:]], dim=1)

    def null_cond(self, n: int) -> torch.Tensor:
        """The learned 'no caption' condition, repeated n times (already in prepared space)."""
        null = self.null_embedding
        if self.layout is not None:
            t, d = self.max_tokens, self.token_dim
            tokens = torch.cat([self.null_token, null.new_zeros((t - 1) * d)])
            mask = torch.cat([null.new_ones(1), null.new_zeros(t - 1)])
            null = torch.cat([null, tokens, mask])
        return null.unsqueeze(0).expand(n, -1)

    def drop_cond(self, cond: torch.Tensor, p: float | None = None) -> torch.Tensor:
        """Replace a random share p of (prepared) conditions by the null condition."""
        p = self.cond_drop_prob if p is None else p
        if p <= 0:
            return cond
        drop = torch.rand(cond.shape[0], 1, device=cond.device) < p
        return torch.where(drop, self.null_cond(cond.shape[0]).to(cond.dtype), cond)
