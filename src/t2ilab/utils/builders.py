"""Instantiate the run's parts from config nodes (shared by train, sample and eval)."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig


def build_encoder(cfg_encoder: DictConfig) -> Any:
    """The frozen text encoder (lazy: no weights are loaded until the first encode)."""
    return instantiate(cfg_encoder)


def build_datamodule(cfg_data: DictConfig, text_encoder: Any) -> Any:
    """The datamodule, wired to the encoder so batches carry cached text embeddings."""
    return instantiate(cfg_data, text_encoder=text_encoder, _recursive_=False)


def build_model(cfg_model: DictConfig, cond_dim: int) -> Any:
    """The family's LightningModule; ``cond_dim`` comes from the encoder."""
    return instantiate(cfg_model, cond_dim=int(cond_dim))


def instantiate_group(node: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a keyed group (callbacks, loggers); null entries are dropped."""
    return [instantiate(v) for v in (node or {}).values() if v is not None and "_target_" in v]
