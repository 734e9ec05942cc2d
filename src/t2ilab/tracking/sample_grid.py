"""Callback: every N steps (and when fit ends) a captioned grid of EMA samples for fixed prompts
and seeds, saved as PNG in the run dir and logged to W&B (image + its prompts as caption).

Images come from the project's one generation function (``models.generation.generate_images``:
image i uses seed ``seed + i``), so the grid's image i is exactly what ``python -m t2ilab.sample``
writes as ``{i:06d}.png`` for the same checkpoint, prompts, seed, num_per_prompt and sampling."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import lightning as L
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from t2ilab.models.generation import generate_images
from t2ilab.tracking.grid import write_grid

log = logging.getLogger(__name__)


class SampleGridCallback(L.Callback):
    """Args:
        every_n_steps: grid interval in optimiser steps of the module (0 = only at fit end).
        prompts: fixed prompts; None = the first ``num_prompts`` distinct val captions.
        num_prompts: number of prompts when taken from the data.
        num_per_prompt: images per prompt (columns).
        seed: base seed (image i uses seed + i): grids at different steps are comparable.
        sampling: extra ``generate`` options (e.g. {num_steps: 25}).
        at_train_end: also draw a grid when training ends (``on_train_end``: the model is still on
            its training device; by ``on_fit_end`` Lightning has moved it to the CPU).
    """

    def __init__(self, every_n_steps: int = 1000, prompts: Sequence[str] | None = None, num_prompts: int = 8,
                 num_per_prompt: int = 4, seed: int = 0, sampling: dict | None = None, at_train_end: bool = True):
        self.every_n_steps, self.num_prompts, self.num_per_prompt = int(every_n_steps), num_prompts, num_per_prompt
        self.prompts, self.seed, self.sampling, self.at_train_end = (list(prompts) if prompts else None), seed, dict(sampling or {}), at_train_end
        self._last_step, self._last_bucket = -1, 0

    def _prompts(self, trainer: L.Trainer) -> list[str]:
        if self.prompts is None:
            ds = trainer.datamodule.dataset("val")
            seen: dict[str, None] = {}
            for i in range(len(ds)):
                seen.setdefault(ds.caption(i), None)
                if len(seen) == self.num_prompts:
                    break
            self.prompts = list(seen)
        return self.prompts

    @rank_zero_only
    def draw(self, trainer: L.Trainer, module: Any) -> Path | None:
        step = trainer.global_step
        if step == self._last_step:
            return None
        self._last_step = step
        prompts = self._prompts(trainer)
        cond = trainer.datamodule.encode(prompts)
        images, _ = generate_images(module, cond, self.num_per_prompt, self.seed, **self.sampling)
        out = Path(trainer.default_root_dir) / "samples" / f"grid_step{step:07d}.png"
        grid = write_grid(images, prompts, self.num_per_prompt, out)
        for lg in trainer.loggers:
            if isinstance(lg, WandbLogger):
                lg.log_image(key="samples/grid", images=[grid], caption=[" | ".join(prompts)], step=step)
        log.info("sample grid at step %d -> %s", step, out)
        return out

    def on_train_start(self, trainer: L.Trainer, module: Any) -> None:
        # resumed run: the interval already drawn before the checkpoint is not drawn again
        self._last_bucket = trainer.global_step // self.every_n_steps if self.every_n_steps > 0 else 0

    def on_train_batch_end(self, trainer: L.Trainer, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        # bucket crossing, not step % n == 0: with manual optimisation (GAN: two optimiser steps
        # per batch) global_step can jump over exact multiples
        bucket = trainer.global_step // self.every_n_steps if self.every_n_steps > 0 else 0
        if bucket > self._last_bucket:
            self._last_bucket = bucket
            self.draw(trainer, module)

    def on_train_end(self, trainer: L.Trainer, module: Any) -> None:
        if self.at_train_end:
            self.draw(trainer, module)
