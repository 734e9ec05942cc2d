"""The Lightning callbacks of a run's ending (the markers themselves: ``tracking/run_status.py``).

``InterruptCheckpoint`` writes ``last.ckpt`` of the current step on SIGTERM / SIGINT / a requested exit
(and at the end of fit when the periodic checkpoints missed the final step); ``DDPFailure`` lets the
first failing DDP rank write ``FAILED`` naming itself."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import lightning as L

from t2ilab.compat.lightning import (batches_that_stepped, last_saved_step, restart_recounts_last_batch,
                                     uncount_last_batch)
from t2ilab.tracking.run_status import is_interrupt, record_failure, status_of

log = logging.getLogger("t2ilab.tracking.run_status")


class InterruptCheckpoint(L.Callback):
    """On SIGTERM / SIGINT / SystemExit, save ``last.ckpt`` of the current step (atomically) before the process
    exits, so ``ckpt_path=<run>/checkpoints/last.ckpt`` (or a requeue) continues from there. Also when fit
    ends normally at a step the periodic checkpoints did not cover (``max_steps`` not a multiple of
    ``every_n_train_steps``): ``last.ckpt`` is then the final model, not the one of the last interval.

    Lightning raises on SIGTERM only after a batch is done and counted in its logging step; when that batch
    ended on a validation boundary, Lightning's restart counts it again and every resumed row would be logged
    one step late. The interrupt checkpoint is written with that count taken back (compat.lightning), so the
    resumed run logs at the same steps as an uninterrupted one."""

    def __init__(self) -> None:
        self.saved: Path | None = None
        self._stepped_at_batch_end: int | None = None  # Lightning's logging step before on_advance_end counts
        self._interrupting = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        self._stepped_at_batch_end = batches_that_stepped(trainer)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if not self._interrupting or self._stepped_at_batch_end is None:
            return  # periodic checkpoints: Lightning's restart counts them right
        if batches_that_stepped(trainer) > self._stepped_at_batch_end and restart_recounts_last_batch(trainer):
            uncount_last_batch(checkpoint)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        ck = trainer.checkpoint_callback
        if ck is None or last_saved_step(ck) == trainer.global_step:
            return
        final = Path(getattr(ck, "dirpath", None) or Path(trainer.default_root_dir) / "checkpoints") / "last.ckpt"
        final.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(final)
        if trainer.is_global_zero:
            log.info("final checkpoint (step %d) -> %s", trainer.global_step, final)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not is_interrupt(exception):
            return  # errors (NaN guard, bad data, ...) keep the last good checkpoint instead
        # SystemExit: something asked the process to end mid-fit, e.g. submitit's USR2 handler after it
        # requeued the job on Slurm (preemption / time limit); the requeued job resumes from this
        ck = trainer.checkpoint_callback
        dirpath = Path(getattr(ck, "dirpath", None) or Path(trainer.default_root_dir) / "checkpoints")
        dirpath.mkdir(parents=True, exist_ok=True)
        final = dirpath / "last.ckpt"
        try:  # atomic: train.py gives the trainer models.atomic_io.AtomicCheckpointIO
            self._interrupting = True
            trainer.save_checkpoint(final)
            if trainer.is_global_zero:
                self.saved = final
                log.warning("interrupted at global step %d: checkpoint written to %s", trainer.global_step, final)
        except Exception as e:  # noqa: BLE001 - never mask the interrupt itself
            log.error("could not write the interrupt checkpoint (%s: %s); the last periodic one is kept",
                      type(e).__name__, e)
        finally:
            self._interrupting = False


class DDPFailure(L.Callback):
    """DDP: the first rank whose fit fails with an error writes ``FAILED`` (naming the rank) from
    ``on_exception``, i.e. before Lightning tears its process group down. The other ranks fail only
    after that (a closed connection, or Lightning's launcher SIGKILLs rank 0 when a child rank dies), so
    the marker names the root cause; the entry point adds what rank 0 saw. Single-process runs: no-op."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if trainer.world_size <= 1 or is_interrupt(exception) or status_of(self.run_dir) is not None:
            return
        try:
            record_failure(self.run_dir, exception, trainer.global_step, rank=trainer.global_rank)
        except Exception as e:  # noqa: BLE001 - never mask the failure itself
            log.error("could not write the FAILED marker (%s: %s)", type(e).__name__, e)
