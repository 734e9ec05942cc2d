"""EvaluationCallback inside a real Lightning Trainer (in process, tiny module, stand-in extractor):
evaluates on the step schedule and at the end of training, logs eval/* to the trainer's loggers (CSV here), sets
callback_metrics, writes metrics.json per step, and continues the schedule on resume."""

from __future__ import annotations

import csv
import json

import lightning as L
import pytest
import torch

from t2ilab.evaluation.callback import EvaluationCallback


class TinyModule(L.LightningModule):
    """A trainable scalar + a stand-in ``generate`` (the callback only needs ``generate``)."""

    def __init__(self, generator):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.gen = generator

    def training_step(self, batch, batch_idx):
        return (self.w - batch["image"].mean()).pow(2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def generate(self, cond, *, generator=None, **sampling):
        return self.gen.generate(cond, generator=generator)


def test_callback_logs_eval_metrics_on_schedule(shapes_dm, metrics_cfg, standin, noise_model, tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    cb = EvaluationCallback(metrics_cfg(num_samples=16, batch_size=8, kid_subset_size=8, isc_splits=2),
                            cache_dir=tmp_path / "cache", every_n_steps=3, eval_on_train_end=True,
                            feature_extractor=standin(0))
    trainer = L.Trainer(max_steps=4, accelerator="cpu", devices=1, callbacks=[cb], enable_checkpointing=False,
                        logger=CSVLogger(tmp_path, name="csv"), log_every_n_steps=1, limit_val_batches=0,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(TinyModule(noise_model(64)), datamodule=shapes_dm)
    rows = list(csv.DictReader(open(tmp_path / "csv" / "version_0" / "metrics.csv")))
    evaluated = {int(r["step"]): float(r["eval/fid"]) for r in rows if r.get("eval/fid")}
    assert sorted(evaluated) == [3, 4]  # every 3 steps + once when training ends (step 4)
    for k in ("eval/kid_mean", "eval/isc_mean", "eval/precision", "eval/recall", "eval/clip_score",
              "eval/prompt_accuracy"):
        assert any(r.get(k) for r in rows), k
    assert float(trainer.callback_metrics["eval/fid"]) == pytest.approx(evaluated[4], rel=1e-6)
    saved = json.loads((tmp_path / "eval" / "step_00000004" / "metrics.json").read_text())
    assert saved["step"] == 4 and saved["fid"] == evaluated[4]
    assert cb.evaluator.s.num_samples == 16 and "generate" in saved["meta"]["stage_seconds"]

    # resumed from the step-4 checkpoint: the schedule continues (next evaluation at 6), instead of
    # evaluating at the first batch (Lightning restores global_step only after on_fit_start)
    ckpt = tmp_path / "step4.ckpt"
    trainer.save_checkpoint(ckpt)
    resumed = EvaluationCallback(metrics_cfg(num_samples=16, batch_size=8, kid_subset_size=8, isc_splits=2),
                                 cache_dir=tmp_path / "cache", every_n_steps=2, feature_extractor=standin(0))
    steps = []
    resumed.run = lambda trainer, module: steps.append(trainer.global_step)
    L.Trainer(max_steps=7, accelerator="cpu", devices=1, callbacks=[resumed], enable_checkpointing=False, logger=False,
              limit_val_batches=0, enable_progress_bar=False, enable_model_summary=False,
              default_root_dir=tmp_path).fit(TinyModule(noise_model(64)), datamodule=shapes_dm, ckpt_path=ckpt)
    assert steps == [6]


def test_evaluation_leaves_the_training_rng_as_it_was(monkeypatch):
    """Preparing (reference statistics, classifier training) and evaluating draw random numbers: the training's
    draws must not depend on whether a run evaluates (a sweep job and its single-run reproduction)."""
    import random
    from types import SimpleNamespace

    import numpy as np

    class Drawing:
        s = SimpleNamespace(save_samples=False)

        def prepare(self, *_, **__):
            torch.rand(100), np.random.rand(3), random.random()

        def evaluate(self, *_, **__):
            torch.rand(100)
            return {"classifier_fd": 1.0, "meta": {}, "skipped": {}}

    cb = EvaluationCallback(eval_on_train_end=True)
    cb.evaluator = Drawing()
    strategy = SimpleNamespace(barrier=lambda *_: None, all_gather=None)
    trainer = SimpleNamespace(is_global_zero=False, strategy=strategy, global_step=3, global_rank=0, world_size=1,
                              callback_metrics={}, loggers=[], default_root_dir="/nonexistent")
    module = torch.nn.Linear(1, 1)
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    expected = (torch.rand(1).item(), np.random.rand(), random.random())
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    cb.on_fit_start(trainer, SimpleNamespace(device="cpu"))
    cb.run(trainer, module)
    assert (torch.rand(1).item(), np.random.rand(), random.random()) == expected
