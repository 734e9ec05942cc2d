"""Load any t2ilab checkpoint (any family) without knowing its class: the composed run config is
stored in the checkpoint (``checkpoint["t2ilab"]``) and the model is rebuilt from it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from t2ilab.utils.builders import build_model


def read_metadata(ckpt_path: str | os.PathLike, map_location: Any = "cpu") -> tuple[dict, dict]:
    """(checkpoint dict, its t2ilab metadata); clear errors for a missing or foreign file."""
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (ckpt_path=...; runs keep theirs in "
                                "<run_dir>/checkpoints/last.ckpt)")
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    meta = ckpt.get("t2ilab") if isinstance(ckpt, dict) else None
    if not meta or not meta.get("config"):
        raise ValueError(f"{path} is not a t2ilab checkpoint (no 't2ilab' metadata with the run config); "
                         "only checkpoints written by `python -m t2ilab.train` can be loaded")
    return ckpt, meta


def load_model(ckpt_path: str | os.PathLike, map_location: Any = "cpu") -> tuple[Any, DictConfig]:
    """Rebuild the model of a checkpoint with its weights (incl. EMA), in eval mode.

    Returns:
        (model, cfg): the LightningModule and the full composed training config.
    """
    ckpt, meta = read_metadata(ckpt_path, map_location)
    cfg = OmegaConf.create(meta["config"])
    model = build_model(cfg.model, meta["cond_dim"])
    model.load_state_dict(ckpt["state_dict"])
    model.run_config = meta["config"]
    return model.eval(), cfg
