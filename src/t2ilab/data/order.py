"""Training order that a resumed run can continue exactly, sharded over DDP ranks.

``DataLoader(shuffle=True)`` draws its permutation from the global torch RNG when each epoch's
iterator is created, and a run resumed mid-epoch restarts the epoch from its first batch (with a
new permutation). Here the order of epoch ``e`` is ``randperm(n)`` from a private generator seeded
with ``(seed, e)`` — it touches no global RNG — and ``skip(k)`` drops the first ``k`` items of the
next epoch iterated, i.e. the batches the interrupted run had already trained on
(``TextConditionedModule`` sets it from the checkpoint). Lightning calls ``set_epoch``.

DDP: every rank computes the same permutation (same ``seed``, same epoch), pads it to a multiple of
the world size with its first items (as ``DistributedSampler(drop_last=False)``, so every rank has
the same number of batches) and takes every ``num_replicas``-th item from ``rank`` on: the shards of
an epoch are disjoint and together cover it. ``skip`` counts items of this rank's shard (batches
trained by this rank x batch size). The class derives from ``DistributedSampler`` so that
Lightning's ``use_distributed_sampler`` leaves it alone (it would otherwise wrap it in a
``DistributedSamplerWrapper``, which shards the *skipped* order and hides ``skip`` from the resume).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler


def _world() -> tuple[int, int]:
    """(world size, rank) of the initialised default process group, else (1, 0)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


class ResumableRandomSampler(DistributedSampler):
    """Seeded per-epoch permutation, this rank's shard of it, with a one-shot skip of consumed items.

    Args:
        num_items: dataset length.
        seed: the run's seed; must be the same on every rank.
        num_replicas, rank: DDP world size and this process's rank; None = from the initialised
            ``torch.distributed`` process group (1 and 0 without one).
    """

    def __init__(self, num_items: int, seed: int, num_replicas: int | None = None, rank: int | None = None) -> None:
        Sampler.__init__(self)  # not DistributedSampler.__init__: it needs a dataset and a process group
        world, own = _world()
        self.num_replicas = int(world if num_replicas is None else num_replicas)
        self.rank = int(own if rank is None else rank)
        if self.num_replicas < 1 or not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is not in [0, num_replicas={self.num_replicas})")
        self.num_items, self.seed, self.epoch, self._skip = int(num_items), int(seed), 0, 0
        self.shuffle, self.drop_last = True, False  # DistributedSampler's attributes, for readers of them
        self.num_samples = math.ceil(self.num_items / self.num_replicas)  # per rank
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def skip(self, num_items: int) -> None:
        """Skip the first ``num_items`` of this rank's next iteration (once)."""
        self._skip = max(0, int(num_items))

    def order(self, epoch: int) -> torch.Tensor:
        """The whole epoch's permutation (the same on every rank)."""
        # torch.initial_seed() of an unseeded process is a random 64-bit value: keep the mix in int64
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % (2**63 - 1))
        return torch.randperm(self.num_items, generator=g)

    def shard(self, epoch: int) -> torch.Tensor:
        """This rank's items of epoch ``epoch``: every ``num_replicas``-th of the padded permutation."""
        perm = self.order(epoch)
        if self.num_replicas == 1:
            return perm
        pad = self.total_size - self.num_items
        if pad:
            perm = torch.cat([perm, perm.repeat(math.ceil(pad / max(self.num_items, 1)))[:pad]])
        return perm[self.rank:self.total_size:self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        start, self._skip = self._skip, 0
        return iter(self.shard(self.epoch)[start:].tolist())

    def __len__(self) -> int:
        return self.num_samples


class ResumableDataLoader(DataLoader):
    """The training ``DataLoader`` over a :class:`ResumableRandomSampler`: its position survives a
    checkpoint, so it says so to Lightning (the ``state_dict`` / ``load_state_dict`` protocol Lightning
    checks before warning that a mid-epoch resume is "unreliable").

    The position itself is restored by ``models/training_state.py`` (the checkpoint's batches trained ->
    ``sampler.skip``), before the first resumed batch; the state here records the order's identity (seed,
    epoch) and ``load_state_dict`` warns when the checkpoint's training order had another seed (the resumed
    run then sees another order: not an exact continuation)."""

    def state_dict(self) -> dict[str, Any]:
        s = self.sampler
        return {"sampler": type(s).__name__, "seed": int(getattr(s, "seed", 0)), "epoch": int(getattr(s, "epoch", 0))}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        seed = state_dict.get("seed")
        if isinstance(self.sampler, ResumableRandomSampler) and seed is not None and int(seed) != self.sampler.seed:
            logging.getLogger(__name__).warning(
                "the checkpoint's training order was seeded with %s, this run's with %s: the resumed run sees "
                "another data order (resume with seed=%s for an exact continuation)", seed, self.sampler.seed, seed)
