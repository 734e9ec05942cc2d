"""Shared fixtures for the encoder tests: the real clip_tiny config, instantiated without Hydra's app."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "encoder"


def encoder_cfg(name: str, **overrides):
    """conf/encoder/<name>.yaml as a plain dict (``cache_dir`` must be overridden: no ``paths`` group here)."""
    cfg = OmegaConf.load(CONF_DIR / f"{name}.yaml")
    for k, v in overrides.items():
        cfg[k] = v
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.fixture(name="encoder_cfg")
def encoder_cfg_fixture():
    """The ``encoder_cfg(name, **overrides)`` loader above, for test modules (tests/ is not a package)."""
    return encoder_cfg


@pytest.fixture
def make_tiny():
    """Factory: OpenCLIPEncoder from conf/encoder/clip_tiny.yaml with overrides (default cache_dir=None)."""
    from t2ilab.encoders.open_clip_encoder import OpenCLIPEncoder

    def make(**overrides):
        cfg = encoder_cfg("clip_tiny", cache_dir=None)
        cfg.pop("_target_")
        cfg.update(overrides)
        return OpenCLIPEncoder(**cfg)

    return make
