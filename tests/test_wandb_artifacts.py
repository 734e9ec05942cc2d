"""Checkpoints as W&B model artifacts (``logger.wandb.log_model``: aliases latest / best / step-N, metadata step,
score, metrics, config hash), read back from the offline run; a ``wandb:`` checkpoint reference offline is one
clear message; lineage (``use_checkpoint``) for ``wandb:`` references and local files."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import torch

from cli_helpers import TINY, run
from t2ilab.compat.wandb import read_offline_run
from t2ilab.tracking.artifacts import config_hash


@pytest.mark.slow  # a short training with artifact logging (~11-25 s on 2 cores)
def test_log_model_all_logs_every_checkpoint_as_a_model_artifact_staged_in_the_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    run("train", "debug=fast", *TINY, f"hydra.run.dir={run_dir}", f"paths.cache_dir={tmp_path / 'cache'}",
        "logger.wandb.log_model=all", "callbacks.sample_grid=null", timeout=600)
    logged = read_offline_run(run_dir)
    models = [a for a in logged["artifacts"] if a["type"] == "model"]
    assert models and all("latest" in a["aliases"] for a in models), logged["artifacts"]
    assert any(a["metadata"].get("original_filename", "").endswith(".ckpt") for a in models)
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    for a in models:  # each carries its checkpoint's step (alias + metadata) and the run's config hash
        name, step = a["metadata"]["original_filename"], a["metadata"]["step"]
        assert f"step-{step}" in a["aliases"] and a["metadata"]["config_hash"] == config_hash(last["t2ilab"]["config"])
        assert name == "last.ckpt" or name == f"step={step:07d}.ckpt", a
    assert [a for a in models if a["metadata"]["original_filename"] == "last.ckpt"][-1]["metadata"]["step"] == \
        last["global_step"]  # (last.ckpt is logged again each time it is rewritten)
    staged = list((run_dir / "wandb" / "data").rglob("*"))  # W&B's staging copy lives in the run dir
    assert any(p.is_file() for p in staged), staged


def test_a_bad_log_model_value_and_an_offline_artifact_reference_are_one_message(tmp_path):
    from t2ilab.tracking.artifacts import log_model_mode, resolve_checkpoint

    assert log_model_mode("last") is True and log_model_mode("all") == "all" and log_model_mode(False) is False
    with pytest.raises(ValueError, match="logger.wandb.log_model='every': use false"):
        log_model_mode("every")
    env = {**os.environ, "WANDB_MODE": "offline"}
    r = subprocess.run([sys.executable, "-m", "t2ilab.sample", "ckpt_path=wandb:lab/t2ilab/model-abc:best",
                        "prompts=[x]", f"out_dir={tmp_path / 's'}"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "names a W&B model artifact, which needs W&B online" in r.stderr
    assert resolve_checkpoint("/some/last.ckpt", tmp_path) == "/some/last.ckpt"


class _Tiny:
    """A few optimiser steps of a linear model whose checkpoints carry a t2ilab-style run config."""

    CONFIG = {"model": {"lr": 0.1}, "seed": 3}

    @staticmethod
    def module():
        import lightning as L

        class Tiny(L.LightningModule):
            def __init__(self):
                super().__init__()
                self.net = torch.nn.Linear(2, 1)

            def training_step(self, batch, _):
                loss = self.net(batch[0]).pow(2).mean()
                self.log("train/loss", loss)
                return loss

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

            def train_dataloader(self):
                x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
                return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=2)

            def on_save_checkpoint(self, checkpoint):
                checkpoint["t2ilab"] = {"config": _Tiny.CONFIG, "wandb_id": "trainrun"}

        torch.manual_seed(0)
        return Tiny()


@pytest.mark.parametrize("log_model", ["last", "all"])
def test_logged_checkpoints_carry_their_step_alias_score_metrics_and_config_hash(tmp_path, monkeypatch, log_model):
    """``last`` with a top-k callback logs the kept files when fit ends, ``all`` each one as it is saved: every
    model artifact has ``latest`` and ``step-N`` (N = the checkpoint's global step), the best one ``best``, and
    metadata step / score / metrics / config hash. A local checkpoint offline records no lineage, without error."""
    import lightning as L
    import wandb
    from lightning.pytorch.callbacks import ModelCheckpoint

    from t2ilab.compat.lightning import WandbLogger
    from t2ilab.tracking.artifacts import use_checkpoint

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb" / "data"))
    ckpts = tmp_path / "checkpoints"
    callback = ModelCheckpoint(dirpath=ckpts, filename="step={step}", auto_insert_metric_name=False,
                               monitor="train/loss", mode="min", save_top_k=1, save_last=True, every_n_train_steps=2)
    logger = WandbLogger(project="t2ilab-test", save_dir=str(tmp_path), log_model=log_model)
    trainer = L.Trainer(max_steps=4, logger=logger, callbacks=[callback], accelerator="cpu", log_every_n_steps=1,
                        enable_progress_bar=False, enable_model_summary=False)
    try:
        trainer.fit(_Tiny.module())
        assert use_checkpoint([logger], str(ckpts / "last.ckpt"), ckpts / "last.ckpt") is None  # offline: skipped
    finally:
        wandb.finish()
    models = [a for a in read_offline_run(tmp_path, wait=30)["artifacts"] if a["type"] == "model"]
    by_file = {a["metadata"]["original_filename"]: a for a in models}
    assert "last.ckpt" in by_file, models
    last_step = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]
    for name, a in by_file.items():  # (a top-k file may be gone: its name holds its step)
        step = last_step if name == "last.ckpt" else int(name.removeprefix("step=").removesuffix(".ckpt"))
        assert {"latest", f"step-{step}"} <= set(a["aliases"]), a
        meta = a["metadata"]
        assert meta["step"] == step and len(meta["config_hash"]) == 12
        assert meta["config_hash"] == config_hash(_Tiny.CONFIG)
        assert isinstance(meta["score"], float) and "train/loss" in meta["metrics"], meta
        assert meta["ModelCheckpoint"]["monitor"] == "train/loss"
    assert last_step == 4
    best = [a for a in models if "best" in a["aliases"]]  # (W&B moves an alias to the newest version given it)
    assert best and best[-1]["metadata"]["original_filename"] == Path(callback.best_model_path).name, models
    if log_model == "all":  # the step-2 checkpoint was logged when saved, before the top-k callback removed it
        assert any("step-2" in a["aliases"] for a in models), models


class _FakeRun:
    def __init__(self, mode="online"):
        self.settings, self.used = types.SimpleNamespace(mode=mode), []

    def use_artifact(self, artifact, type=None, aliases=None):  # noqa: A002 - wandb's argument name
        self.used.append((artifact, type, aliases))


def test_jobs_reading_a_checkpoint_use_it_as_an_input_artifact_online_and_skip_offline(tmp_path):
    from t2ilab.compat.lightning import WandbLogger
    from t2ilab.tracking.artifacts import use_checkpoint

    ckpt = tmp_path / "step=7.ckpt"
    torch.save({"global_step": 7, "epoch": 0, "t2ilab": {"config": {"seed": 1}, "wandb_id": "abc123"}}, ckpt)
    logger = WandbLogger(project="p", save_dir=str(tmp_path))
    logger._experiment = online = _FakeRun()  # (no W&B server here: the run records what it was asked)

    ref = "lab/t2ilab/model-abc123:step-7"
    assert use_checkpoint([logger], f"wandb:{ref}", ckpt) == ref
    assert online.used[-1] == (ref, "model", None)

    assert use_checkpoint([logger], str(ckpt), ckpt) == "checkpoint-abc123"  # a local file: a reference artifact
    artifact, _, aliases = online.used[-1]
    assert artifact.type == "model" and aliases == ["step-7"]
    assert artifact.manifest.entries["model.ckpt"].ref == ckpt.resolve().as_uri()
    assert artifact.metadata["global_step"] == 7 and artifact.metadata["config_hash"] == config_hash({"seed": 1})

    logger._experiment = offline = _FakeRun("offline")
    assert use_checkpoint([logger], f"wandb:{ref}", ckpt) is None and not offline.used
    assert use_checkpoint([], f"wandb:{ref}", ckpt) is None  # logger=none / csv: nothing to record
