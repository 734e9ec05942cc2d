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
            its training device; by ``on_fit_end`` Lightning has moved it to the CPU). train.py turns
            it off when ``sample_after`` writes the final samples (one final grid, not two) and the
            interval grid of the last step is then skipped too.
        cpu_max_steps: on a CPU, iterative samplers (diffusion) draw grids with at most this many
            steps unless ``sampling`` sets ``num_steps`` (a 50-step guided grid of a GPU-sized UNet
            takes minutes on 2 cores); null = the model's own default everywhere.
    """

    def __init__(self, every_n_steps: int = 1000, prompts: Sequence[str] | None = None, num_prompts: int = 8,
                 num_per_prompt: int = 4, seed: int = 0, sampling: dict | None = None, at_train_end: bool = True,
                 cpu_max_steps: int | None = 25):
        self.every_n_steps, self.num_prompts, self.num_per_prompt = int(every_n_steps), num_prompts, num_per_prompt
        self.prompts, self.seed, self.sampling, self.at_train_end = (list(prompts) if prompts else None), seed, dict(sampling or {}), at_train_end
        self.cpu_max_steps, self._told = cpu_max_steps, False
        self._last_step, self._last_bucket = -1, 0

    def sampling_for(self, module: Any) -> dict:
        """The ``generate`` options of this callback's grids for ``module`` on its current device."""
        from t2ilab.models.generation import model_device, sampling_used

        opts = dict(self.sampling)
        steps = sampling_used(module, opts).get("num_steps")
        if (self.cpu_max_steps and "num_steps" not in opts and steps and int(steps) > self.cpu_max_steps
                and model_device(module).type == "cpu"):
            opts["num_steps"] = int(self.cpu_max_steps)
            if not self._told:
                self._told = True
                log.info("sample grids on the CPU use %d sampling steps (model default %d; set "
                         "callbacks.sample_grid.sampling={num_steps: N} or cpu_max_steps=null to change)",
                         self.cpu_max_steps, steps)
        return opts

    def prompts_for(self, datamodule: Any) -> list[str]:
        """The fixed prompts, else the first ``num_prompts`` distinct val captions (then kept)."""
        if self.prompts is None:
            ds = datamodule.dataset("val")
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
        prompts = self.prompts_for(trainer.datamodule)
        cond = trainer.datamodule.encode(prompts)
        images, _ = generate_images(module, cond, self.num_per_prompt, self.seed, desc="sample grid",
                                    **self.sampling_for(module))
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
            last = 0 < (getattr(trainer, "max_steps", -1) or -1) <= trainer.global_step
            if not (last and not self.at_train_end):  # the final grid is the entry point's (sample_after)
                self.draw(trainer, module)

    def on_train_end(self, trainer: L.Trainer, module: Any) -> None:
        if self.at_train_end:
            self.draw(trainer, module)
