"""The library seams in ``t2ilab/compat`` and the Hydra plugin module: each reach into a library is
checked on its own, so an upgrade fails one named test here instead of a run in production."""

from __future__ import annotations

import importlib.util
import logging
import sys
import warnings
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import hydra_plugins.t2ilab_optuna_sweeper as plugin_pkg

PLUGIN_FILE = Path(plugin_pkg.__file__).parent / "optuna_sweeper.py"


# ------------------------------------------------------------------------- the Hydra plugin module
def _exec_like_hydra_13(name: str = "hydra_plugins.t2ilab_optuna_sweeper.optuna_sweeper"):
    """What Hydra 1.3's plugin scanner does: build the module from its spec and execute it *without*
    registering it in sys.modules first (with string annotations a dataclass defined there cannot
    resolve them: 'NoneType' object has no attribute '__dict__')."""
    spec = importlib.util.spec_from_file_location(name, PLUGIN_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_sweeper_plugin_module_survives_hydras_13_scanner_twice():
    from hydra.core.config_store import ConfigStore
    from hydra.plugins.sweeper import Sweeper

    from t2ilab.sweeps.optuna_sweeper import SearchSpaceError

    first, second = _exec_like_hydra_13(), _exec_like_hydra_13()  # re-executed in place: nothing may break
    assert issubclass(first.OptunaSweeper, Sweeper) and issubclass(second.OptunaSweeper, Sweeper)
    assert first.SearchSpaceError is second.SearchSpaceError is SearchSpaceError  # exceptions stay one class
    node = ConfigStore.instance().load("hydra/sweeper/t2ilab_optuna.yaml").node
    assert node._target_ == "hydra_plugins.t2ilab_optuna_sweeper.optuna_sweeper.OptunaSweeper"


def test_hydra_discovers_and_builds_the_sweeper():
    """Hydra's own plugin discovery (whichever version is installed) finds the class the config names."""
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    names = {f"{c.__module__}.{c.__name__}" for c in Plugins.instance().discover(Sweeper)}
    assert "hydra_plugins.t2ilab_optuna_sweeper.optuna_sweeper.OptunaSweeper" in names


@pytest.mark.parametrize("form", ["config", "object"])
def test_the_optuna_sweeper_accepts_the_sampler_as_config_or_as_an_instance(form):
    """Hydra 1.4 hands the sampler node over unbuilt (_recursive_=False); Hydra 1.3 builds it first."""
    import optuna

    from hydra_plugins.t2ilab_optuna_sweeper.optuna_sweeper import OptunaSweeper

    if form == "config":
        sampler = OmegaConf.create({"_target_": "optuna.samplers.RandomSampler", "seed": 5})
    else:
        sampler = optuna.samplers.RandomSampler(seed=5)
    s = OptunaSweeper(sampler=sampler, params={"a": "interval(0, 1)"})
    built = s._make_sampler()
    assert isinstance(built, optuna.samplers.RandomSampler)
    if form == "object":
        assert built is sampler
    else:  # the seed reached the sampler: two sweepers built from the same config draw the same values
        again = OptunaSweeper(sampler=sampler)._make_sampler()
        dist = {"a": optuna.distributions.FloatDistribution(0, 1)}
        assert optuna.create_study(sampler=built).ask(dist).params == optuna.create_study(sampler=again).ask(dist).params


def test_the_sweeper_refuses_something_that_is_not_a_sampler():
    from hydra_plugins.t2ilab_optuna_sweeper.optuna_sweeper import OptunaSweeper, SearchSpaceError

    with pytest.raises(SearchSpaceError, match="not an optuna sampler"):
        OptunaSweeper(sampler=object())._make_sampler()
    with pytest.raises(SearchSpaceError, match="not an optuna sampler class"):
        OptunaSweeper(sampler={"_target_": "collections.OrderedDict"})._make_sampler()


# ------------------------------------------------------------------------------------ compat.hydra
def test_instantiate_raises_the_targets_own_error_on_every_hydra():
    from t2ilab.compat.hydra import instantiate

    with pytest.raises(ValueError, match="invalid literal for int"):
        instantiate({"_target_": "builtins.int", "_args_": ["not a number"]})
    assert instantiate({"_target_": "builtins.int", "_args_": ["7"]}) == 7


# -------------------------------------------------------------------------------- compat.diffusers
def _ddim_pair(eta_steps: int = 5):
    from diffusers import DDIMScheduler, DDPMScheduler

    from t2ilab.compat.diffusers import FiniteDDIMScheduler

    train = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    kw = dict(timestep_spacing="trailing", clip_sample=False, set_alpha_to_one=False)
    plain, ours = DDIMScheduler.from_config(train.config, **kw), FiniteDDIMScheduler.from_config(train.config, **kw)
    for s in (plain, ours):
        s.set_timesteps(eta_steps)
    return plain, ours


def test_finite_ddim_is_finite_where_diffusers_rounds_to_nan_and_identical_elsewhere():
    plain, ours = _ddim_pair()
    g = torch.Generator().manual_seed(0)
    x, eps, noise = (torch.randn(2, 3, 4, 4, generator=g) for _ in range(3))
    for t in plain.timesteps:
        a = plain.step(eps, t, x, eta=1.0, variance_noise=noise).prev_sample
        b = ours.step(eps, t, x, eta=1.0, variance_noise=noise).prev_sample
        assert torch.isfinite(b).all(), f"t={int(t)}"
        if torch.isfinite(a).all():
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    first = plain.step(eps, plain.timesteps[0], x, eta=1.0, variance_noise=noise).prev_sample
    if torch.isfinite(first).all():  # diffusers fixed it: t2ilab.compat.diffusers can go
        pytest.skip("diffusers' DDIM eta=1 first step is finite now; FiniteDDIMScheduler is no longer needed")


# ------------------------------------------------------------------------------- compat.lightning
def test_lightning_noise_is_dropped_at_its_source_only():
    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    from t2ilab.compat.lightning import quiet_library_noise

    quiet_library_noise()
    quiet_library_noise()  # idempotent
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    lg = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    h, level = Keep(), lg.level
    lg.addHandler(h)
    lg.setLevel(logging.INFO)
    try:
        rank_zero_info("💡 Tip: For seamless cloud logging and experiment tracking, try installing litlogger")
        rank_zero_info("GPU available: False")
    finally:
        lg.removeHandler(h)
        lg.setLevel(level)
    assert records == ["GPU available: False"]  # only the advertisement went
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet_library_noise()
        from lightning.pytorch.utilities._pytree import _tree_flatten  # noqa: PLC2701 - the emitter itself

        _tree_flatten(3)
    assert not [w for w in caught if "LeafSpec" in str(w.message)]


def test_wandb_logger_does_not_pass_the_deprecated_anonymous_setting(tmp_path):
    from lightning.pytorch.loggers.wandb import WandbLogger as LightningWandbLogger

    from t2ilab.compat.lightning import WandbLogger

    lg = WandbLogger(project="p", save_dir=str(tmp_path), offline=True)
    assert isinstance(lg, LightningWandbLogger)
    assert "anonymous" not in lg._wandb_init and lg._wandb_init["project"] == "p"
    assert WandbLogger.__module__ == "t2ilab.compat.lightning" and "t2ilab.compat.lightning" in sys.modules


def test_the_srun_hint_is_quieted_for_single_process_runs_only_when_asked(tmp_path, monkeypatch):
    from lightning.fabric.plugins.environments.slurm import SLURMEnvironment

    from t2ilab.compat.lightning import quiet_srun_hint

    fake = tmp_path / "srun"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{__import__('os').environ['PATH']}")
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    monkeypatch.delenv("SLURM_JOB_NAME", raising=False)
    with warnings.catch_warnings(record=True) as loud:
        warnings.simplefilter("always")
        SLURMEnvironment._validate_srun_used()
    assert any("`srun` command is available" in str(w.message) for w in loud)  # Lightning still says it ...
    with warnings.catch_warnings(record=True) as quiet:
        warnings.simplefilter("always")
        quiet_srun_hint()
        SLURMEnvironment._validate_srun_used()
    assert not any("`srun` command is available" in str(w.message) for w in quiet)  # ... and we can quiet it
