"""Compositional prompt adherence on two-shape captions ("a green triangle and a red circle").

The reference classifier of prompt accuracy scores the FIRST shape only. Here a multi-label CNN
(the same trunk, ``classifier.build_net``) is trained on the real training images to say which
(colour, shape) pairs are present; a generated image is right when its two most likely pairs are
exactly the caption's two pairs (``both``) - swapped colours ("binding" errors) count as wrong.
``per_shape`` is the share of the caption's pairs among the top two. The classifier's own scores on
held-out real images are the ceiling, reported alongside (never compare without it).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from t2ilab.evaluation.classifier import build_net

log = logging.getLogger(__name__)


def pair_targets(ds: Any, pairs: list[tuple[str, str]]) -> tuple[list[int], torch.Tensor]:
    """Items with two shapes and their multi-hot (colour, shape) targets (N, len(pairs))."""
    index = {p: k for k, p in enumerate(pairs)}
    items, rows = [], []
    for i in range(len(ds)):
        shapes = ds.attributes(i)["shapes"]
        if len(shapes) == 2:
            row = torch.zeros(len(pairs))
            for s in shapes:
                row[index[(s["color"], s["shape"])]] = 1.0
            items.append(i)
            rows.append(row)
    return items, torch.stack(rows) if rows else torch.zeros(0, len(pairs))


def score(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """``both``: top-2 pairs == the two stated pairs; ``per_shape``: stated pairs found in the top 2."""
    top2 = torch.zeros_like(targets).scatter_(1, logits.topk(2, dim=1).indices, 1.0)
    hits = (top2 * targets).sum(1)
    return {"both": float((hits == 2).float().mean()), "per_shape": float((hits / 2).mean())}


class PairClassifier:
    """Multi-label (colour, shape) presence classifier of real two-shape images."""

    def __init__(self, pairs: list[tuple[str, str]], channels: int, image_size: int, seed: int = 0):
        self.pairs, self.seed = pairs, seed
        self.net = build_net(channels, len(pairs), image_size)

    def fit(self, ds: Any, epochs: int = 6, batch_size: int = 128, lr: float = 2e-3) -> "PairClassifier":
        items, y = pair_targets(ds, self.pairs)
        x = torch.stack([ds.load_image(i) for i in items])
        t0, rng = time.perf_counter(), np.random.default_rng(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            opt = torch.optim.AdamW(self.net.parameters(), lr=lr, weight_decay=1e-4)
            self.net.train()
            for _ in range(epochs):
                perm = torch.from_numpy(rng.permutation(len(x)))
                for s in range(0, len(x) - batch_size + 1, batch_size):
                    b = perm[s:s + batch_size]
                    loss = F.binary_cross_entropy_with_logits(self.net(x[b].float() / 127.5 - 1), y[b])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
        self.net.eval()
        log.info("pair classifier: %d real two-shape images x %d epochs in %.1fs", len(x), epochs,
                 time.perf_counter() - t0)
        return self

    @torch.no_grad()
    def logits(self, images01: torch.Tensor) -> torch.Tensor:
        """float images in [0,1] (N,C,H,W) -> (N, len(pairs)) logits (quantised like saved PNGs)."""
        x = (images01.clamp(0, 1) * 255).round()
        return torch.cat([self.net(x[i:i + 512] / 127.5 - 1) for i in range(0, len(x), 512)])
