"""A training progress bar that counts what a step-based run is limited by: optimizer steps.

t2ilab runs are step-based (``trainer.max_epochs=-1``, ``trainer.max_steps=N``): Lightning's bar counts
batches of the current epoch and restarts every epoch (older releases printed ``Epoch 0/-2``), so it
never shows how far the run is. This bar reads ``step 412/1200`` (epoch beside it), continues from the
resumed step, and behaves like Lightning's TQDM bar otherwise (validation bars, metrics postfix)."""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch.callbacks import TQDMProgressBar


class StepProgressBar(TQDMProgressBar):
    """TQDM bar over ``trainer.max_steps`` (falls back to Lightning's per-epoch bar without a step limit)."""

    @staticmethod
    def _step_based(trainer: Any) -> bool:
        return trainer.max_steps is not None and trainer.max_steps > 0

    def on_train_start(self, trainer: Any, *args: Any) -> None:
        super().on_train_start(trainer, *args)
        self._t0, self._step0 = time.time(), trainer.global_step  # (a resumed run starts at its step)

    def on_train_epoch_start(self, trainer: Any, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)  # (Lightning resets the bar: its clock too)
        if self._step_based(trainer) and self.train_progress_bar is not None:
            bar = self.train_progress_bar
            bar.total, bar.initial = trainer.max_steps, getattr(self, "_step0", 0)
            bar.n = trainer.global_step
            bar.start_t = getattr(self, "_t0", bar.start_t)  # elapsed and steps/s over the whole run, not the epoch
            bar.set_description(f"step (epoch {trainer.current_epoch})")
            bar.refresh()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self._step_based(trainer):
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        bar, n = self.train_progress_bar, trainer.global_step
        if bar is not None and self._should_update(n, bar.total):
            bar.n = n
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # (refreshes)
        return None
