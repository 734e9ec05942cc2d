"""The config tree: every group choice composes, resolves and names importable targets; every
experiment preset builds its model and datamodule; bad choices/keys fail with helpful errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from t2ilab.utils.builders import build_datamodule, build_model
from t2ilab.utils.config import CONF_DIR

GROUPS = ("data", "encoder", "model", "trainer", "logger", "callbacks", "metrics", "paths", "experiment", "debug")


def choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def compose_train(tmp_path: Path, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"hydra.run.dir={tmp_path}"], return_hydra_config=True)
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.runtime.output_dir = str(tmp_path)
    HydraConfig.instance().set_config(cfg)  # lets ${hydra:runtime.output_dir} resolve as in a real run
    return cfg


def targets(node) -> list[str]:
    """Every _target_ in a config subtree."""
    if isinstance(node, dict):
        found = [node["_target_"]] if "_target_" in node else []
        return found + [t for v in node.values() for t in targets(v)]
    if isinstance(node, list):
        return [t for v in node for t in targets(v)]
    return []


def _plain(value):
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value


CASES = [(g, c) for g in GROUPS for c in choices(g)]


@pytest.mark.parametrize(("group", "choice"), CASES, ids=[f"{g}={c}" for g, c in CASES])
def test_every_group_choice_composes_resolves_and_targets_import(tmp_path, group, choice):
    cfg = compose_train(tmp_path, [f"{group}={choice}"])
    resolved = {k: _plain(cfg[k]) for k in cfg if k != "hydra"}
    if group not in ("experiment", "debug"):
        assert cfg.hydra.runtime.choices[group] == choice
    assert resolved["paths"]["run_dir"] == str(tmp_path)
    for target in targets(resolved):
        assert callable(get_object(target)), target


def fake_autoencoder(tmp_path: Path, channels: int, size: int) -> str:
    """An untrained conf/model/autoencoder.yaml checkpoint of the given geometry (what
    model=latent_diffusion needs in model.autoencoder_ckpt)."""
    import torch
    from omegaconf import OmegaConf

    cfg = compose_train(tmp_path / "ae", ["model=autoencoder", f"data.channels={channels}", f"data.image_size={size}"])
    vae = build_model(cfg.model, 16)
    path = tmp_path / f"ae_{channels}x{size}.ckpt"
    torch.save({"state_dict": vae.state_dict(), "t2ilab": {"config": {"model": OmegaConf.to_container(cfg.model, resolve=True)},
                "family": "vae", "cond_dim": 16, "image_shape": [channels, size, size]}}, path)
    return str(path)


@pytest.mark.parametrize("preset", choices("experiment"))
def test_experiment_presets_build_their_model_and_datamodule(tmp_path, preset):
    """A preset must instantiate (no typo'd keys, sizes that fit the data) without training."""
    extra = [f"model.autoencoder_ckpt={fake_autoencoder(tmp_path, 1, 32)}"] if "latent" in preset else []
    cfg = compose_train(tmp_path, [f"experiment={preset}", f"paths.cache_dir={tmp_path / 'cache'}", *extra])
    encoder = instantiate(cfg.encoder)
    dm = build_datamodule(cfg.data, encoder)
    model = build_model(cfg.model, cfg.encoder.dim)
    assert model.image_shape == (cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
    assert dm is not None and sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("model", choices("model"))
@pytest.mark.parametrize("data", ["shapes", "fashion_mnist"])
def test_each_model_fits_each_resolution(tmp_path, model, data):
    """Every family builds for RGB 32 px and grayscale 28 px images (latent diffusion: 28 px gives 7x7
    latents its two-level UNet cannot halve, a clear error naming model.net.channel_mult)."""
    over = [f"model={model}", f"data={data}"] + (["data.image_size=28"] if data == "fashion_mnist" else [])
    if model == "latent_diffusion":
        over.append(f"model.autoencoder_ckpt={fake_autoencoder(tmp_path, *((1, 28) if data == 'fashion_mnist' else (3, 32)))}")
    cfg = compose_train(tmp_path, over)
    if model == "latent_diffusion" and data == "fashion_mnist":
        with pytest.raises(ValueError, match="channel_mult"):
            build_model(cfg.model, 16)
        return
    m = build_model(cfg.model, 16)
    assert m.image_shape == ((1, 28, 28) if data == "fashion_mnist" else (3, 32, 32))


def run_cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "t2ilab.train", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_unknown_group_choice_lists_the_valid_choices(tmp_path):
    r = run_cli("model=difusion", f"hydra.run.dir={tmp_path}")
    assert r.returncode != 0
    assert "Could not find 'model/difusion'" in r.stderr
    for valid in choices("model"):
        assert valid in r.stderr, r.stderr


def test_unknown_key_is_rejected_with_the_append_hint(tmp_path):
    r = run_cli("model.lerning_rate=1e-3", f"hydra.run.dir={tmp_path}")
    assert r.returncode != 0
    assert "lerning_rate" in r.stderr and "+model.lerning_rate" in r.stderr, r.stderr


def test_bad_option_value_names_the_valid_values(tmp_path):
    from t2ilab.utils.schema import validate

    cfg = compose_train(tmp_path, ["model=diffusion", "model.schedule=cosin"])
    with pytest.raises(ValueError, match=r"model.schedule='cosin' \(str\) must be one of cosine, linear"):
        validate(cfg)


def test_sampling_options_of_sample_eval_roundtrip_are_typed_like_trains():
    """``sampling={guidance_scale: true}`` used to run as 1.0 (guidance off) and ``abc`` failed deep in the sampler."""
    from t2ilab.utils.schema import check_sampling

    stand_in = type("DiffusionModule", (), {"__module__": "t2ilab.models.diffusion", "family": "diffusion",
                                             "sampling_keys": ("sampler", "num_steps", "guidance_scale", "eta")})()
    check_sampling({"num_steps": 5, "guidance_scale": 3, "sampler": "ddim"}, stand_in)  # fine
    for bad, says in (({"guidance_scale": True}, "sampling.guidance_scale=True (bool) must be a number"),
                      ({"guidance_scale": "abc"}, "sampling.guidance_scale='abc' (str) must be a number"),
                      ({"num_steps": 0}, "sampling.num_steps=0 is out of range: must be >= 1"),
                      ({"sampler": "euler_x"}, "must be one of"),
                      ({"foo": 1}, "unknown option(s) foo for a diffusion checkpoint; valid: sampler")):
        with pytest.raises(ValueError, match=re.escape(says)):
            check_sampling(bad, stand_in, "sampling")


@pytest.mark.parametrize("name", ["diffusion", "gan", "vae", "autoencoder", "latent_diffusion"])
def test_every_model_yaml_key_is_an_option_of_its_constructor(name):
    """The schema of a model is its constructor's signature (utils/model_schema.py): each key of
    conf/model/<name>.yaml, nested nodes included, is a parameter of its ``_target_`` (or of the options
    dataclass the signature names), so no option is written anywhere else."""
    import dataclasses
    import typing

    from t2ilab.utils.model_schema import schema_for

    def walk(node, prefix):
        schema = schema_for(node.get("_target_"))
        assert schema is not None, f"{prefix}: no schema for {node.get('_target_')}"
        hints = typing.get_type_hints(schema)
        for key, value in node.items():
            if key in ("_target_", "_partial_"):
                continue
            assert key in hints, f"{prefix}{key} is not a parameter of {node['_target_']}"
            if isinstance(value, dict) and "_target_" in value and not dataclasses.is_dataclass(hints[key]):
                walk(value, f"{prefix}{key}.")
            elif isinstance(value, dict) and dataclasses.is_dataclass(hints[key]):
                names = {f.name for f in dataclasses.fields(hints[key])} | {"_target_", "_partial_"}
                assert set(value) <= names, f"{prefix}{key}: {set(value) - names} not in {hints[key].__name__}"

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["paths.run_dir=/tmp/x", f"model={name}"])
    walk(OmegaConf.to_container(cfg.model, resolve=False), "model.")


@pytest.mark.parametrize(("override", "says"), [
    ("model.net.dropout=1.5", "model.net.dropout=1.5 is out of range: must be in [0, 1)"),
    ("model.ema.decay=1.0", "model.ema.decay=1.0 is out of range: must be in [0, 1)"),
    ("model.net.heads=0", "model.net.heads=0 is out of range: must be >= 1"),
    ("model.sampling.num_steps=0", "model.sampling.num_steps=0 is out of range: must be >= 1"),
    ("model.schedule=quadratic", "model.schedule='quadratic' (str) must be one of cosine, linear"),
    ("trainer.precision=bf17-mixed", "trainer.precision='bf17-mixed' (str) must be"),
])
def test_a_range_or_choice_written_in_a_signature_is_checked_before_any_work(override, says):
    from t2ilab.utils.schema import validate

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["paths.run_dir=/tmp/x", override])
    with pytest.raises(ValueError, match=re.escape(says)):
        validate(cfg)


def test_every_lightning_precision_and_auto_pass_the_schema():
    from t2ilab.utils.schema import validate

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["paths.run_dir=/tmp/x"])
    for value in ("auto", "bf16-mixed", "32-true", 32, "16-mixed", "bf16-true"):
        cfg.trainer.precision = value
        validate(cfg)


def test_a_gan_network_option_is_checked_through_its_own_target():
    from t2ilab.utils.schema import validate

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["paths.run_dir=/tmp/x", "model=gan", "model.generator.output=sigmoid",
                                          "model.optimizer_d.lr=-1"])
    with pytest.raises(ValueError) as err:
        validate(cfg)
    assert "model.generator.output='sigmoid' (str) must be one of clamp, linear, tanh" in str(err.value)
    assert "model.optimizer_d.lr=-1 is out of range: must be > 0" in str(err.value)
