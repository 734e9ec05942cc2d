"""conf/data/*.yaml: every constructor arg is configured, and the configs instantiate."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

CONF = Path(__file__).resolve().parents[2] / "conf"
NAMES = ["shapes", "fashion_mnist", "mnist", "cifar10", "captions"]


def _load(name: str, **overrides):
    root = OmegaConf.create({"seed": 5, "paths": OmegaConf.load(CONF / "paths" / "default.yaml")})
    root.data = OmegaConf.load(CONF / "data" / f"{name}.yaml")
    root.data = OmegaConf.merge(root.data, overrides)
    return root


def _init_params(cls) -> set[str]:
    params: set[str] = set()
    for klass in cls.__mro__:  # subclasses forwarding **kwargs: collect the whole chain
        if "__init__" not in klass.__dict__ or klass.__module__.startswith(("lightning", "builtins")):
            continue
        params |= {n for n, p in inspect.signature(klass.__init__).parameters.items()
                   if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind == p.VAR_KEYWORD for p in inspect.signature(klass.__init__).parameters.values()):
            break
    return params - {"self", "text_encoder"}


@pytest.mark.parametrize("name", NAMES)
def test_config_lists_exactly_the_constructor_args(name):
    cfg = _load(name).data
    assert cfg.name == name
    cls = get_class(cfg._target_)
    keys = {k for k in cfg if k != "_target_"}
    assert keys == _init_params(cls), keys ^ _init_params(cls)
    assert cfg.condition_source == "text"
    for key in ("image_size", "channels", "batch_size", "num_workers", "pin_memory"):
        assert key in cfg
    assert cfg.batch_size == 64 and cfg.num_workers == 0 and cfg.pin_memory is False


def test_interpolations_and_instantiation(fake_encoder, tmp_path):
    cfg = _load("shapes", num_train=50, num_val=10, num_test=10)
    dm = instantiate(cfg.data, text_encoder=fake_encoder)
    assert dm.seed == 5 and dm.text_encoder is fake_encoder and len(dm.dataset("val")) == 10
    fm = _load("fashion_mnist")
    assert fm.data.data_dir == fm.paths.data_dir and fm.data.seed == 5
    dm = instantiate(fm.data, text_encoder=fake_encoder)
    assert dm.data_dir == Path(fm.paths.data_dir) and dm.val_size == 5000
    with pytest.raises(MissingMandatoryValue):
        instantiate(_load("captions").data)
