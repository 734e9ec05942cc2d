"""Shared fixtures for the model-family tests: tiny models built from the real conf/model/<family>.yaml
(small net overrides, cond_dim 16), fake caption batches, and a real Lightning Trainer on them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import lightning as L
import pytest
import torch
from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
COND_DIM = 16

# Net overrides that make each family a few thousand parameters (milliseconds per step on CPU).
TINY = {
    "gan": {"z_dim": 8, "generator": {"base_channels": 8, "max_channels": 16, "emb_dim": 16},
            "discriminator": {"base_channels": 8, "max_channels": 16}},
    "vae": {"z_dim": 8, "net": {"base_channels": 8, "max_channels": 16, "emb_dim": 16}},
    "diffusion": {"net": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [],
                          "heads": 2, "dropout": 0.0}, "sampling": {"num_steps": 4}},
}


def tiny_model_cfg(family: str, image_size: int = 16, channels: int = 3, **overrides: Any) -> DictConfig:
    """conf/model/<family>.yaml with tiny nets, the given image geometry and ``overrides`` merged in."""
    cfg = OmegaConf.load(CONF_DIR / "model" / f"{family}.yaml")
    cfg.image_size, cfg.channels = image_size, channels
    return OmegaConf.merge(cfg, TINY.get(family, {}), overrides)


@pytest.fixture
def make_model() -> Callable[..., Any]:
    """Factory ``make_model(family, image_size=16, channels=3, **overrides)``: the family's
    LightningModule built like ``train.py`` does (seeded; ``run_config`` set so checkpoints load)."""
    from t2ilab.utils.builders import build_model

    def make(family: str, image_size: int = 16, channels: int = 3, seed: int = 0, **overrides: Any) -> Any:
        cfg = tiny_model_cfg(family, image_size, channels, **overrides)
        torch.manual_seed(seed)
        model = build_model(cfg, COND_DIM)
        model.run_config = {"model": OmegaConf.to_container(cfg, resolve=True)}
        return model

    return make


def fake_batch(n: int = 4, image_size: int = 16, channels: int = 3, seed: int = 0) -> dict:
    """A batch like the datamodules make: image in [-1,1], unit-norm cond, captions, labels."""
    g = torch.Generator().manual_seed(seed)
    cond = torch.randn(n, COND_DIM, generator=g)
    return {"image": torch.rand(n, channels, image_size, image_size, generator=g) * 2 - 1,
            "cond": cond / cond.norm(dim=1, keepdim=True), "caption": [f"caption {i}" for i in range(n)],
            "label": torch.arange(n), "index": torch.arange(n)}


@pytest.fixture(name="fake_batch")
def fake_batch_fixture() -> Callable[..., dict]:
    return fake_batch


def conds(n: int = 2, seed: int = 1) -> torch.Tensor:
    c = torch.randn(n, COND_DIM, generator=torch.Generator().manual_seed(seed))
    return c / c.norm(dim=1, keepdim=True)


@pytest.fixture(name="conds")
def conds_fixture() -> Callable[..., torch.Tensor]:
    """Factory ``conds(n, seed)``: n unit-norm caption embeddings of size COND_DIM."""
    return conds


@pytest.fixture
def fit(tmp_path) -> Callable[..., L.Trainer]:
    """Factory ``fit(model, batches, max_steps=None, **trainer_kwargs)``: a real CPU Trainer over the
    given list of batch dicts (one per step, no validation, no logger); returns the trainer."""

    def run(model: Any, batches: list[dict], max_steps: int | None = None, **kwargs: Any) -> L.Trainer:
        loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)
        trainer = L.Trainer(**{"accelerator": "cpu", "devices": 1, "max_epochs": 1, "max_steps": max_steps or -1,
                               "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
                               "enable_model_summary": False, "limit_val_batches": 0,
                               "default_root_dir": str(tmp_path), **kwargs})
        trainer.fit(model, train_dataloaders=loader)
        return trainer

    return run


def per_sample_generators(n: int, seed: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


@pytest.fixture(name="generators")
def generators_fixture() -> Callable[..., list[torch.Generator]]:
    """Factory ``generators(n, seed=0)``: one seeded CPU generator per sample."""
    return per_sample_generators


def params_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


@pytest.fixture(name="snapshot")
def snapshot_fixture() -> Callable[[torch.nn.Module], dict[str, torch.Tensor]]:
    """``snapshot(module)``: a detached copy of its parameters (compare before/after a step; buffers
    such as spectral-norm power-iteration vectors move in every training forward and are left out)."""
    return params_of


@pytest.fixture
def roundtrip(tmp_path) -> Callable[[L.Trainer, str], Any]:
    """``roundtrip(trainer)``: save a real Trainer checkpoint and reload it with
    ``t2ilab.models.checkpoint.load_model`` (rebuilds the model from the saved config)."""
    from t2ilab.models.checkpoint import load_model

    def run(trainer: L.Trainer, name: str = "model.ckpt") -> Any:
        path = tmp_path / name
        trainer.save_checkpoint(path)
        return load_model(path)[0]

    return run


def perturb(module: torch.nn.Module, std: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """Add seeded noise to every float parameter (in place): fresh models start some layers at
    zero (identity residual blocks), where the caption cannot change the output yet."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.is_floating_point():
                p.add_(torch.randn(p.shape, generator=g) * std)
    return module


@pytest.fixture(name="perturb")
def perturb_fixture() -> Callable[..., torch.nn.Module]:
    """``perturb(module, std=0.05, seed=0)``: a 'trained-like' module (see ``perturb``)."""
    return perturb
