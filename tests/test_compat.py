"""The library seams in ``t2ilab/compat`` and the Hydra plugin module: each reach into a library is
checked on its own, so an upgrade fails one named test here instead of a run in production."""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
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


# ---------------------------------------------------------------------- compat.lightning internals
class _Tiny:
    """A tiny LightningModule factory (automatic or manual optimisation) and a fit on random batches."""

    @staticmethod
    def module(manual: bool = False, double_step: bool = False):
        import lightning as L

        from t2ilab.compat.lightning import uncounted_step

        class M(L.LightningModule):
            def __init__(self) -> None:
                super().__init__()
                self.lin = torch.nn.Linear(2, 1)
                self.automatic_optimization = not manual
                self.opt_steps = 0

            def training_step(self, batch, i):
                loss = self.lin(batch).pow(2).mean()
                if not manual:
                    return loss
                opt = self.optimizers()
                if double_step:  # an extra step that must not count (the GAN's D steps)
                    with uncounted_step(opt):
                        opt.zero_grad()
                        self.manual_backward(self.lin(batch).pow(2).mean())
                        opt.step()
                        self.opt_steps += 1
                opt.zero_grad()
                self.manual_backward(loss)
                opt.step()
                self.opt_steps += 1
                return None

            def configure_optimizers(self):
                opt = torch.optim.SGD(self.parameters(), lr=0.1)
                return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)}

        return M()

    @staticmethod
    def fit(model, tmp_path, max_steps: int = 3, callbacks=None):
        import lightning as L

        data = torch.utils.data.DataLoader(torch.randn(16, 2), batch_size=2)
        trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                            enable_model_summary=False, enable_checkpointing=bool(callbacks), callbacks=callbacks,
                            default_root_dir=str(tmp_path))
        trainer.fit(model, data)
        return trainer


def test_attached_trainer_is_none_before_fit_and_the_trainer_after(tmp_path):
    from t2ilab.compat.lightning import attached_trainer

    m = _Tiny.module()
    assert attached_trainer(m) is None
    trainer = _Tiny.fit(m, tmp_path, max_steps=1)
    assert attached_trainer(m) is trainer


def test_uncounted_step_steps_the_optimizer_without_advancing_global_step(tmp_path):
    m = _Tiny.module(manual=True, double_step=True)
    trainer = _Tiny.fit(m, tmp_path, max_steps=3)
    assert trainer.global_step == 3 and m.opt_steps == 6  # 3 counted + 3 uncounted steps


def test_last_saved_step_of_a_model_checkpoint(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from t2ilab.compat.lightning import last_saved_step

    ck = ModelCheckpoint(dirpath=str(tmp_path / "ck"), every_n_train_steps=2, save_top_k=-1)
    assert last_saved_step(ck) in (None, 0)
    _Tiny.fit(_Tiny.module(), tmp_path, max_steps=4, callbacks=[ck])
    assert last_saved_step(ck) == 4


def test_set_scheduler_last_lr_follows_a_hand_changed_lr():
    from t2ilab.compat.lightning import set_scheduler_last_lr

    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    opt.param_groups[0]["lr"] = 0.01
    assert sched.get_last_lr() == [0.1]
    set_scheduler_last_lr(sched, opt)
    assert sched.get_last_lr() == [0.01]


def test_ddp_find_unused_parameters_sets_it_only_when_the_user_did_not():
    from types import SimpleNamespace

    from lightning.pytorch.strategies import DDPStrategy

    from t2ilab.compat.lightning import ddp_find_unused_parameters

    plain = DDPStrategy()
    assert ddp_find_unused_parameters(SimpleNamespace(strategy=plain)) is True
    assert plain._ddp_kwargs["find_unused_parameters"] is True
    chosen = DDPStrategy(find_unused_parameters=False)
    assert ddp_find_unused_parameters(SimpleNamespace(strategy=chosen)) is False
    assert chosen._ddp_kwargs["find_unused_parameters"] is False
    assert ddp_find_unused_parameters(SimpleNamespace(strategy=object())) is False  # not DDP: untouched


def test_the_loop_progress_rewrite_finds_lightnings_keys_in_a_real_checkpoint(tmp_path):
    from t2ilab.compat.lightning import rewrite_as_previous_batch_end

    trainer = _Tiny.fit(_Tiny.module(), tmp_path, max_steps=3)
    path = tmp_path / "c.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=False)
    fit = ckpt["loops"]["fit_loop"]
    bp = fit["epoch_loop.batch_progress"]
    stepped = fit["epoch_loop.state_dict"]["_batches_that_stepped"]
    assert bp["current"]["processed"] == 3 and stepped == 3
    assert rewrite_as_previous_batch_end(ckpt) is False  # saved at a batch end: nothing to rewrite
    bp["current"]["started"] = bp["total"]["started"] = 4  # as if saved mid-way through batch 4
    assert rewrite_as_previous_batch_end(ckpt) is True
    assert bp["current"]["completed"] == 2 and bp["current"]["ready"] == bp["current"]["started"] == 3
    assert fit["epoch_loop.state_dict"]["_batches_that_stepped"] == stepped - 1
    optim = fit["epoch_loop.automatic_optimization.optim_progress"]["optimizer"]
    assert optim["step"]["total"]["ready"] == optim["step"]["total"]["completed"]



def _fit_logging_steps(root, max_steps: int, callbacks: list, ckpt_path=None, val_batches: int = 1) -> list[int]:
    """Fit a tiny model (10 batches an epoch, validation every 4 batches) and return the steps Lightning gave
    its logger for the training loss, in order."""
    import lightning as L
    from lightning.pytorch.loggers.logger import Logger

    class Steps(Logger):
        name, version, experiment = "steps", "0", None

        def __init__(self) -> None:
            super().__init__()
            self.steps: list[int] = []

        def log_metrics(self, metrics, step=None) -> None:
            if "loss" in metrics:
                self.steps.append(step)

        def log_hyperparams(self, *args, **kwargs) -> None:
            pass

    class M(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(2, 1)

        def training_step(self, batch, i):
            loss = self.lin(batch).pow(2).mean()
            self.log("loss", loss)
            return loss

        def validation_step(self, batch, i):
            self.log("val", self.lin(batch).pow(2).mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    logger = Steps()
    trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", logger=logger, log_every_n_steps=1,
                        val_check_interval=4, check_val_every_n_epoch=None, num_sanity_val_steps=0,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                        default_root_dir=str(root))
    loader = torch.utils.data.DataLoader
    try:
        trainer.fit(M(), loader(torch.randn(20, 2), batch_size=2), loader(torch.randn(2 * val_batches, 2), batch_size=2),
                    ckpt_path=ckpt_path)
    except SystemExit:  # Lightning's SIGTERMException
        pass
    return logger.steps


@pytest.mark.parametrize("cut, val_batches", [(4, 1), (3, 1), (4, 2)],
                         ids=["validation-boundary", "between-validations", "mid-validation"])
def test_sigterm_checkpoint_resumes_at_the_same_logging_steps(tmp_path, cut, val_batches):
    """Lightning raises on SIGTERM after a batch is done and counted; at a validation boundary its restart
    counts that batch again (every resumed row one step late, found by CI) unless the interrupt checkpoint
    takes the count back (InterruptCheckpoint + compat.lightning). Mid-validation it raises before counting."""
    import lightning as L

    from t2ilab.tracking.run_callbacks import InterruptCheckpoint

    class SigtermAfter(L.Callback):  # the signal a scheduler sends, at a chosen batch (Lightning handles it)
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step == cut:
                os.kill(os.getpid(), signal.SIGTERM)

    straight = _fit_logging_steps(tmp_path / "straight", 12, [], val_batches=val_batches)
    assert straight == list(range(12))
    run = tmp_path / "cut"
    first = _fit_logging_steps(run, 12, [InterruptCheckpoint(), SigtermAfter()], val_batches=val_batches)
    assert first == list(range(cut))
    (ckpt,) = run.rglob("last.ckpt")
    resumed = _fit_logging_steps(run, 12, [InterruptCheckpoint()], ckpt_path=str(ckpt), val_batches=val_batches)
    assert first + resumed == straight


# ------------------------------------------------------------------------------------ compat.wandb
def test_the_offline_log_reader_reads_what_the_installed_wandb_wrote(tmp_path, monkeypatch):
    import wandb

    from t2ilab.compat.wandb import read_offline_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(project="t2ilab-compat", dir=str(tmp_path), config={"lr": 0.5}, tags=["x"])
    for step in range(3):
        run.log({"train/loss": 1.0 / (step + 1)}, step=step)
    run.summary["best"] = 7
    run.finish(exit_code=3)
    got = read_offline_run(next(tmp_path.glob("wandb/offline-run-*")), wait=10)  # (finish() may return first)
    assert got["id"] == run.id and got["tags"] == ["x"] and got["config"]["lr"] == 0.5
    assert [r["train/loss"] for r in got["history"]] == [1.0, 0.5, 1.0 / 3]
    assert got["summary"]["best"] == 7 and got["exit_code"] == 3


def test_a_resumed_run_dirs_segments_read_as_one_run_in_order(tmp_path, monkeypatch):
    """Each launch of a resumed run adds an offline segment with the same id: read back as one run whose
    history covers both launches in order, with the last launch's exit code and definitions of both."""
    import time

    import wandb

    from t2ilab.compat.wandb import read_offline_run, run_dir_runs

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for launch, (steps, code) in enumerate(((range(0, 3), 143), (range(3, 6), 0))):
        run = wandb.init(project="t2ilab-compat", dir=str(tmp_path), id="resumed1", resume="allow")
        run.define_metric("trainer/global_step")
        run.define_metric(f"loss{launch}", step_metric="trainer/global_step", summary="min")
        for step in steps:
            run.log({f"loss{launch}": float(step), "trainer/global_step": step})
        run.finish(exit_code=code)
        time.sleep(1.1)  # segment folders are named by their start second
    assert len(run_dir_runs(tmp_path)) == 2
    got = read_offline_run(tmp_path, wait=10)
    assert got["segments"] == 2 and got["id"] == "resumed1" and got["exit_code"] == 0
    assert [r["trainer/global_step"] for r in got["history"]] == list(range(6))  # in order, no gap
    assert got["metrics"]["loss0"]["summary"] == ["min"] and got["metrics"]["loss1"]["summary"] == ["min"]
