"""What a checkpoint needs beyond Lightning's own state so that *kill -9 + resume* trains exactly
like an uninterrupted run (issue 12): the RNG states (python, numpy, torch, CUDA) at the save, and
how many batches were trained (-> the data-order position inside the epoch).

Lightning restores weights, optimisers, LR schedules, the global step and EMA (it lives in the
state dict), but neither RNG state nor the position in a shuffled epoch: a resumed run re-draws
noise/timesteps and restarts its epoch with a new permutation. Here the RNG state taken at the
save is put back right before the first batch after the resume (after Lightning's own seeding and
loader set-up), and the seeded sampler (data/order.py) skips the batches already trained on.
Validation draws from a forked, fixed-seed RNG (``fixed_rng``), so it neither perturbs training
nor makes ``val/loss`` differ between two runs.
"""

from __future__ import annotations

import contextlib
import logging
import random
from typing import Any, Iterator

import numpy as np
import torch

from t2ilab.data.order import ResumableRandomSampler

log = logging.getLogger(__name__)


def rng_state() -> dict[str, Any]:
    """Every RNG state a training step may draw from."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
             "has_gauss": int(has_gauss), "gauss": float(gauss)}  # plain types: Lightning loads weights_only
    state = {"python": random.getstate(), "numpy": numpy, "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


@contextlib.contextmanager
def rng_untouched() -> Iterator[None]:
    """Every RNG a training step draws from is as it was after the block (work beside the training, such as
    an evaluation, must not change the training's random draws)."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def set_rng_state(state: dict[str, Any]) -> None:
    """Put back what ``rng_state`` returned (CUDA only when the device count matches)."""
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


@contextlib.contextmanager
def fixed_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Draw from a fixed seed inside, leave the global RNG state exactly as it was outside."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def skip_trained_batches(trainer: Any, batches_seen: int) -> int:
    """Make the train loader's sampler skip the batches of the current epoch that were trained
    before the interruption; returns how many batches are skipped."""
    per_epoch = int(trainer.num_training_batches) if trainer.num_training_batches != float("inf") else 0
    if per_epoch <= 0:
        return 0
    skip = batches_seen - trainer.current_epoch * per_epoch
    if skip <= 0:
        return 0
    loader = trainer.train_dataloader
    sampler = getattr(loader, "sampler", None)
    if not isinstance(sampler, ResumableRandomSampler):
        log.warning("resuming mid-epoch (%d batches in) with a %s: the epoch restarts from its first batch, so "
                    "the data order differs from an uninterrupted run", skip, type(sampler).__name__)
        return 0
    sampler.skip(min(skip, per_epoch) * int(loader.batch_size))
    log.info("resuming mid-epoch: skipping the %d batch(es) of epoch %d trained before the interruption",
             skip, trainer.current_epoch)
    return skip


def as_if_saved_after_previous_batch(checkpoint: dict) -> bool:
    """A checkpoint taken mid-batch (an interrupt) made to read like the previous batch's end-of-batch
    checkpoint, so the resumed run continues exactly (the loop-progress edit: t2ilab.compat.lightning)."""
    from t2ilab.compat.lightning import rewrite_as_previous_batch_end

    return rewrite_as_previous_batch_end(checkpoint)


def seed_rank_batch(run_seed: int | None, rank: int, batch: int) -> int:
    """DDP: seed python/numpy/torch (+CUDA) before training batch ``batch`` from (run seed, rank, batch).

    Every rank starts from the same seed (identical initial weights; DDP also broadcasts rank 0's),
    but must draw its own noise, timesteps, caption dropout and augmentations, or the ranks would
    only repeat each other's randomness on other images. Seeding per batch instead of once per rank
    makes this a function of the position in training: a resumed DDP run draws exactly what an
    uninterrupted one does on every rank, with no per-rank RNG state to gather into the (rank-0
    written) checkpoint. ``run_seed`` None: Lightning's ``PL_GLOBAL_SEED``. Returns the seed used."""
    import os

    base = int(run_seed if run_seed is not None else os.environ.get("PL_GLOBAL_SEED", "0"))
    seed = int(np.random.SeedSequence([base % 2**63, int(rank), int(batch)]).generate_state(1, np.uint64)[0] >> 1)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # all CUDA devices too
    return seed
