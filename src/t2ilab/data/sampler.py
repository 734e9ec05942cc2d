"""Training order that a resumed run can continue exactly.

``DataLoader(shuffle=True)`` draws its permutation from the global torch RNG when each epoch's
iterator is created, and a run resumed mid-epoch restarts the epoch from its first batch (with a
new permutation). Here the order of epoch ``e`` is ``randperm(n)`` from a private generator seeded
with ``(seed, e)`` — it touches no global RNG — and ``skip(k)`` drops the first ``k`` items of the
next epoch iterated, i.e. the batches the interrupted run had already trained on
(``TextConditionedModule`` sets it from the checkpoint). Lightning calls ``set_epoch``.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


class ResumableRandomSampler(Sampler[int]):
    """Seeded per-epoch permutation with a one-shot skip of already-consumed items."""

    def __init__(self, num_items: int, seed: int) -> None:
        self.num_items, self.seed, self.epoch, self._skip = int(num_items), int(seed), 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def skip(self, num_items: int) -> None:
        """Skip the first ``num_items`` of the next iteration (once)."""
        self._skip = max(0, int(num_items))

    def order(self, epoch: int) -> torch.Tensor:
        # torch.initial_seed() of an unseeded process is a random 64-bit value: keep the mix in int64
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % (2**63 - 1))
        return torch.randperm(self.num_items, generator=g)

    def __iter__(self) -> Iterator[int]:
        start, self._skip = self._skip, 0
        return iter(self.order(self.epoch)[start:].tolist())

    def __len__(self) -> int:
        return self.num_items
