"""Lightning callback: periodic evaluation of the module being trained (DDP-correct).

Every rank generates its share ``rank::world_size`` of the N samples (per-sample seeds, the one
generation path of ``models.generation``: the union is the single-process sample set), featurises
them on its device, the per-sample records are all-gathered,
and rank 0 computes the metrics once and logs them; the result is broadcast so every rank sees the
same ``trainer.callback_metrics["eval/..."]`` (usable as a ModelCheckpoint monitor).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch

from t2ilab.evaluation.engine import Evaluator
from t2ilab.evaluation.results import PREFIX, report, scalar_metrics, write_metrics_json
from t2ilab.models.training_state import rng_untouched

log = logging.getLogger(__name__)


class EvaluationCallback(L.Callback):
    """Evaluate ``pl_module.generate`` (the module's EMA weights when it uses them) during training.

    Args:
        metrics: the ``metrics`` config (mapping or MetricsSettings).
        cache_dir: cache root for reference statistics / classifiers (``${paths.cache_dir}``).
        every_n_steps: evaluate whenever global_step crosses a multiple of this (None = never).
        every_n_epochs: evaluate at the end of every n-th training epoch (None = never).
        eval_on_train_end: also evaluate once when training ends (unless that step was just evaluated).
            Runs in ``on_train_end``, not ``on_fit_end``: by then Lightning has torn the strategy down
            (module moved to the CPU), so a fit-end evaluation would run on the CPU and break DDP gathers.
        out_dir: where metrics.json (+ samples) of each evaluation go (default: <default_root_dir>/eval).
        datamodule: datamodule providing the evaluation split (default: ``trainer.datamodule``).
        feature_extractor: replaces the InceptionExtractor (same interface; tests / other backbones).
    """

    def __init__(self, metrics: Any = None, cache_dir: str | os.PathLike = "~/.cache/t2ilab",
                 every_n_steps: int | None = None, every_n_epochs: int | None = None, eval_on_train_end: bool = False,
                 out_dir: str | os.PathLike | None = None, datamodule: Any = None, feature_extractor: Any = None):
        super().__init__()
        if not (every_n_steps or every_n_epochs or eval_on_train_end):
            log.warning("EvaluationCallback: neither every_n_steps, every_n_epochs nor eval_on_train_end is set")
        self.metrics, self.cache_dir = metrics, str(Path(cache_dir).expanduser())
        self.every_n_steps, self.every_n_epochs = every_n_steps, every_n_epochs
        self.eval_on_train_end, self.out_dir, self.datamodule = eval_on_train_end, out_dir, datamodule
        self.feature_extractor = feature_extractor
        self.evaluator: Evaluator | None = None
        self._last_bucket, self._last_step = 0, -1
        self.last_result: dict[str, Any] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        dm = self.datamodule or trainer.datamodule
        if dm is None:
            raise ValueError("EvaluationCallback needs a datamodule (trainer.fit(datamodule=...) or datamodule=)")
        self.evaluator = Evaluator(self.metrics, dm, self.cache_dir, self.feature_extractor)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # rank 0 computes the (cached) reference statistics and trains/caches the classifier first;
        # the others then load networks and the cached classifier. The training RNG is left as it was:
        # a run trains the same weights with or without evaluation (a sweep job and its reproduction)
        with rng_untouched():
            if trainer.is_global_zero:
                self.evaluator.prepare(pl_module.device, reference=True)
            trainer.strategy.barrier("t2ilab_eval_prepare")
            if not trainer.is_global_zero:
                self.evaluator.prepare(pl_module.device, reference=False)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a resumed run continues the schedule instead of evaluating at its first batch (the loops,
        # hence global_step, are restored after on_fit_start but before on_train_start)
        if self.every_n_steps:
            self._last_bucket = trainer.global_step // self.every_n_steps

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.every_n_steps:
            bucket = trainer.global_step // self.every_n_steps  # robust to several optimizer steps per batch
            if bucket > self._last_bucket:
                self._last_bucket = bucket
                self.run(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.run(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.eval_on_train_end and self._last_step != trainer.global_step:
            self.run(trainer, pl_module)

    def run(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """Evaluate now (all ranks must call this); returns the metrics on every rank.

        Args:
            trainer: the running trainer.
            pl_module: the module being trained (must have ``generate``).
        """
        step, was_training = trainer.global_step, pl_module.training
        self._last_step = step
        pl_module.eval()
        try:
            with rng_untouched():  # a periodic evaluation does not shift the training's random draws
                result = self.evaluator.evaluate(
                    pl_module, rank=trainer.global_rank, world_size=trainer.world_size,
                    gather=trainer.strategy.all_gather, sample_dir=self._sample_dir(trainer, step))
        finally:
            pl_module.train(was_training)
        if trainer.world_size > 1:
            result = trainer.strategy.broadcast(result, src=0)
        for k, v in scalar_metrics(result).items():
            trainer.callback_metrics[PREFIX + k] = torch.tensor(v)
        if trainer.is_global_zero:
            write_metrics_json(result, self._step_dir(trainer, step), step=step)
            report(result, trainer.loggers, step=step, evaluator=self.evaluator)
        self.last_result = result
        return result

    def _step_dir(self, trainer: L.Trainer, step: int) -> Path:
        root = Path(self.out_dir) if self.out_dir else Path(trainer.default_root_dir) / "eval"
        return root / f"step_{step:08d}"

    def _sample_dir(self, trainer: L.Trainer, step: int) -> str | None:
        return str(self._step_dir(trainer, step) / "samples") if self.evaluator.s.save_samples else None
