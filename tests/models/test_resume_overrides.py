"""Resume semantics (issue 11): optimiser values given on the command line at resume take effect
(Lightning would silently restore the checkpoint's), keep the warm-up position and the Adam
moments, and are logged as changes."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from t2ilab.utils.builders import build_model
from t2ilab.utils.config import CONF_DIR

D = 8


def tiny(lr: float, weight_decay: float = 0.0, warmup: int = 0, optimizer: str = "torch.optim.AdamW"):
    cfg = OmegaConf.load(CONF_DIR / "model" / "diffusion.yaml")
    cfg.image_size, cfg.channels = 8, 1
    cfg.net.update(base_channels=8, channel_mult=[1], num_res_blocks=1, attn_resolutions=[], heads=1, dropout=0.0)
    cfg.lr_warmup_steps = warmup
    cfg.optimizer.update(lr=lr, weight_decay=weight_decay, _target_=optimizer)
    torch.manual_seed(0)
    model = build_model(cfg, D)
    model.run_config = {"model": OmegaConf.to_container(cfg)}
    return model


class Data(L.LightningDataModule):
    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        items = [{"image": torch.rand(4, 1, 8, 8, generator=g) * 2 - 1, "cond": torch.randn(4, D, generator=g),
                  "caption": ["c"] * 4} for _ in range(8)]
        return DataLoader(items, batch_size=None)


class Spy(Callback):
    """Optimiser hyper-parameters and Adam step count seen by the first batch of the (resumed) fit."""

    def __init__(self):
        self.seen, self.losses = None, []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if self.seen is None:
            opt = trainer.optimizers[0]
            g = opt.param_groups[0]
            state = opt.state[g["params"][0]]
            self.seen = {"lr": g["lr"], "initial_lr": g["initial_lr"], "weight_decay": g["weight_decay"],
                         "adam_step": float(state["step"]) if "step" in state else 0.0}


def fit(model, tmp_path, steps, ckpt_path=None, spy=None):
    spy = spy or Spy()
    ck = ModelCheckpoint(dirpath=tmp_path / "ck", filename="step={step}", save_last=True, every_n_train_steps=1,
                         save_top_k=-1)  # as conf/callbacks/default.yaml: every periodic checkpoint is kept
    L.Trainer(max_steps=steps, logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
              default_root_dir=tmp_path, callbacks=[spy, ck]).fit(model, datamodule=Data(), ckpt_path=ckpt_path)
    return spy.seen


def test_resume_with_new_lr_and_weight_decay_takes_effect_and_is_logged(tmp_path, caplog):
    fit(tiny(1e-3), tmp_path, 3)
    with caplog.at_level(logging.WARNING, logger="t2ilab.models.resume"):
        seen = fit(tiny(1e-4, weight_decay=0.01), tmp_path, 5, ckpt_path=str(tmp_path / "ck" / "last.ckpt"))
    assert seen["lr"] == seen["initial_lr"] == 1e-4 and seen["weight_decay"] == 0.01
    assert seen["adam_step"] == 3  # the moments were restored, not reset
    text = caplog.text
    assert "lr 0.0001 (checkpoint had 0.001)" in text and "weight_decay 0.01 (checkpoint had 0" in text


def test_resume_keeps_the_warmup_position_with_the_new_lr(tmp_path):
    fit(tiny(1e-3, warmup=10), tmp_path, 3)
    seen = fit(tiny(5e-4, warmup=10), tmp_path, 4, ckpt_path=str(tmp_path / "ck" / "last.ckpt"))
    # LambdaLR at step 3 of a 10-step warm-up scales the base lr by (3 + 1) / 10
    assert seen["initial_lr"] == 5e-4 and abs(seen["lr"] - 5e-4 * 0.4) < 1e-12


def test_resume_with_the_same_config_changes_nothing(tmp_path, caplog):
    fit(tiny(1e-3), tmp_path, 2)
    with caplog.at_level(logging.WARNING, logger="t2ilab.models.resume"):
        seen = fit(tiny(1e-3), tmp_path, 3, ckpt_path=str(tmp_path / "ck" / "last.ckpt"))
    assert seen["lr"] == 1e-3 and "resuming with" not in caplog.text


def test_divergence_advice_names_a_healthy_checkpoint_and_following_it_recovers(tmp_path):
    """SGD with a huge lr: the weights explode, a diverged last.ckpt is written, then the loss turns
    non-finite. The guard must name an older healthy checkpoint, call the newer ones diverged, and
    resuming from it with a lower lr (its advice) must train on with finite losses."""
    from t2ilab.models.base import NonFiniteLossError
    from t2ilab.models.health import checkpoint_reason

    with pytest.raises(NonFiniteLossError) as e:
        fit(tiny(30.0, optimizer="torch.optim.SGD"), tmp_path, 200)
    msg = str(e.value)
    good = Path(re.search(r"resume with ckpt_path=(\S+\.ckpt)", msg).group(1))
    assert checkpoint_reason(good) is None and good.name != "last.ckpt", msg
    assert checkpoint_reason(tmp_path / "ck" / "last.ckpt") is not None  # the newest one is diverged ...
    assert "do not resume from the diverged last.ckpt" in msg  # ... and named as such
    step = torch.load(good, map_location="cpu", weights_only=False)["global_step"]
    spy = Spy()
    fit(tiny(1e-3, optimizer="torch.optim.SGD"), tmp_path, step + 6, ckpt_path=str(good), spy=spy)
    assert len(spy.losses) == 6 and all(math.isfinite(v) for v in spy.losses), spy.losses
