"""Hyper-parameter search (``-m hparams_search=...``, our Optuna sweeper in src/hydra_plugins): every
search config composes with the sweeper, its objective is an eval/* metric the evaluation callback
produces, every value of its search space gives a valid job config; the sweeper's study logic (best
value, failed trials, results file); a bad search space stops the sweep before any job; a run whose
optimized_metric is missing fails with an error naming it; end to end, a tiny study per family writes
optimization_results.yaml, one complete run per trial with the metric in its W&B summary and the
swept values as W&B tags."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from hydra_plugins.t2ilab_optuna_sweeper.optuna_sweeper import OptunaSweeper, SearchSpaceError, format_value, \
    probe_points
from t2ilab.tracking.objective import EVAL_METRICS, PREFIX, ObjectiveError, check_objective, check_trial_config, \
    objective_value
from t2ilab.utils.config import CONF_DIR

SEARCHES = sorted(p.stem for p in (CONF_DIR / "hparams_search").glob("*.yaml"))
TINY = ["model.net.base_channels=16", "model.net.channel_mult=[1,2]", "model.net.num_res_blocks=1",
        "model.sampling.num_steps=3", "data.num_train=256", "data.num_val=64", "seed=3"]
SMALL_EVAL = ["metrics.num_samples=16", "metrics.batch_size=8", "metrics.classifier.max_train=256"]


def experiment_for(search: str) -> str:
    family = search.split("_")[0]
    return f"shapes_{family}" if family in ("diffusion", "gan", "vae") else "shapes_vae"


def compose_train(overrides: list[str]):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


def run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "t2ilab.train", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


# ---------------------------------------------------------------------------------------- configs
def test_there_is_a_generic_and_a_per_family_search():
    assert {"optuna", "diffusion_optuna", "gan_optuna", "vae_optuna"} <= set(SEARCHES)


@pytest.mark.parametrize("search", SEARCHES)
def test_search_config_composes_with_the_optuna_sweeper_and_an_eval_objective(search):
    cfg = compose_train([f"hparams_search={search}", f"experiment={experiment_for(search)}"])
    assert cfg.hydra.runtime.choices["hydra/sweeper"] == "t2ilab_optuna"
    assert cfg.hydra.sweeper._target_ == "hydra_plugins.t2ilab_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert cfg.hydra.sweeper.sampler.seed is not None  # a reproducible study
    # the objective is an evaluation metric the configured callback produces at the end of training
    metric = cfg.optimized_metric
    assert metric.startswith(PREFIX) and metric[len(PREFIX):] in EVAL_METRICS
    flag, lower_better = EVAL_METRICS[metric[len(PREFIX):]]
    assert cfg.metrics[flag] is True and cfg.callbacks.evaluation.eval_on_train_end is True
    assert cfg.hydra.sweeper.direction == ("minimize" if lower_better else "maximize")
    assert cfg.callbacks.evaluation._target_ == "t2ilab.evaluation.callback.EvaluationCallback"
    check_trial_config(cfg)


@pytest.mark.parametrize("search", SEARCHES)
def test_every_value_of_the_search_space_gives_a_valid_job_config(search):
    """What the sweeper checks before launching: each choice and both ends of each range compose and
    pass the typed-schema check (so a search space with a typo'd key fails here, not in job 7)."""
    base = [f"hparams_search={search}", f"experiment={experiment_for(search)}"]
    cfg = compose_train(base)
    sweeper = OptunaSweeper(params=cfg.hydra.sweeper.params)
    dists, fixed = sweeper.search_space([])
    assert set(dists) == set(cfg.hydra.sweeper.params) and not fixed
    for point in probe_points(dists):
        job = compose_train([*base, *(f"{k}={format_value(v)}" for k, v in point.items())])
        for key, value in point.items():
            assert OmegaConf.select(job, key) == value, key
        check_trial_config(job)


def test_search_space_syntax_maps_to_optuna_distributions():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    s = OptunaSweeper(params={"a": "tag(log, interval(1e-5, 1e-3))", "b": "int(interval(0, 4))", "b2": "interval(0, 4)", "c": "range(1, 8, 3)",
                              "d": "choice(x, 'y z', 2)", "e": 5})
    dists, fixed = s.search_space(["f=choice(true,false)", "g=1"])
    assert dists["a"] == FloatDistribution(1e-5, 1e-3, log=True)
    assert dists["b"] == IntDistribution(0, 4) and dists["b2"] == FloatDistribution(0.0, 4.0)  # Hydra: int(...) casts
    assert dists["c"] == IntDistribution(1, 7, step=3)  # range() excludes its stop, as in a grid sweep
    assert dists["d"] == CategoricalDistribution(["x", "y z", 2])
    assert dists["f"] == CategoricalDistribution([True, False])
    assert fixed == ["e=5", "g=1"]
    with pytest.raises(SearchSpaceError, match=r"needs low > 0"):
        OptunaSweeper(params={"a": "tag(log, interval(0, 1))"}).search_space([])
    with pytest.raises(SearchSpaceError, match="no search space"):
        OptunaSweeper(params={"a": 1}).search_space([])
    assert format_value("y z") == "'y z'" and format_value(1e-4) == "0.0001" and format_value(None) == "null"


# --------------------------------------------------------------------------------------- objective
def test_objective_value_is_the_metric_or_a_clear_error():
    cfg = OmegaConf.create({"optimized_metric": "eval/classifier_fd"})
    assert objective_value(cfg, {"eval/classifier_fd": torch.tensor(3.5)}) == 3.5
    assert objective_value(OmegaConf.create({"optimized_metric": None}), {}) is None  # nothing asked, nothing returned
    with pytest.raises(ObjectiveError, match=r"optimized_metric=eval/classifier_fd was not produced.*callbacks=eval"):
        objective_value(cfg, {"train/loss": torch.tensor(1.0)})
    with pytest.raises(ObjectiveError, match="not finite"):
        objective_value(cfg, {"eval/classifier_fd": torch.tensor(float("nan"))})


def test_objective_check_refuses_losses_a_missing_callback_and_a_wrong_direction():
    search = ["hparams_search=optuna", "experiment=shapes_gan"]
    with pytest.raises(ObjectiveError, match="not an evaluation metric"):
        check_objective(compose_train([*search, "optimized_metric=val/loss"]))
    with pytest.raises(ObjectiveError, match=r"no evaluation callback \(callbacks=eval\)"):
        check_objective(compose_train([*search, "callbacks=default"]))
    with pytest.raises(ObjectiveError, match=r"metrics.classifier_fd is false"):
        check_objective(compose_train([*search, "metrics.classifier_fd=false"]))
    with pytest.raises(ObjectiveError, match="use direction=minimize"):
        check_objective(compose_train([*search, "hydra.sweeper.direction=maximize"]))
    with pytest.raises(ObjectiveError, match="optimized_metric is null"):
        check_objective(compose_train(["experiment=shapes_gan"]))  # plain runs return nothing


# -------------------------------------------------------------------------- the sweeper's study logic
class FakeLauncher:
    """Runs the 'job' in-process: value = (x - 0.3)^2, job fails when fail(x)."""

    def __init__(self, fail=lambda x: False):
        self.fail, self.batches = fail, []

    def launch(self, job_overrides, initial_job_idx):
        self.batches.append((initial_job_idx, [list(o) for o in job_overrides]))
        out = []
        for ov in job_overrides:
            x = float(dict(o.split("=", 1) for o in ov)["x"])
            if self.fail(x):
                out.append(JobReturn(status=JobStatus.FAILED, _return_value=RuntimeError(f"job with x={x} broke")))
            else:
                out.append(JobReturn(status=JobStatus.COMPLETED, _return_value=(x - 0.3) ** 2))
        return out


def fake_sweeper(tmp_path, launcher, **kw) -> OptunaSweeper:
    s = OptunaSweeper(sampler={"_target_": "optuna.samplers.RandomSampler", "seed": 0},
                      params={"x": "interval(0.0, 1.0)"}, **kw)
    s.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}, "a": 1})
    s.hydra_context, s.launcher = SimpleNamespace(config_loader=None), launcher
    s.check_search_space = lambda dists, fixed: None  # composition needs a real Hydra run (tested above / e2e)
    return s


def test_study_asks_n_trials_in_batches_and_writes_the_best(tmp_path):
    launcher = FakeLauncher()
    study = fake_sweeper(tmp_path, launcher, n_trials=5, n_jobs=2).sweep(["seed=1"])
    assert [(i, len(b)) for i, b in launcher.batches] == [(0, 2), (2, 2), (4, 1)]  # job numbers continue
    assert all(b[0] == "seed=1" for _, batch in launcher.batches for b in batch)  # fixed overrides in every job
    res = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    values = [t["value"] for t in res["trials"]]
    assert len(values) == 5 and res["best_value"] == min(values) == study.best_value
    assert res["best_params"] == {"x": res["trials"][values.index(min(values))]["params"]["x"]}
    assert OmegaConf.load(tmp_path / "multirun.yaml").a == 1  # jobs read the swept keys from it (W&B tags)


def test_a_failed_trial_stops_the_study_unless_failures_are_allowed(tmp_path):
    with pytest.raises(RuntimeError, match="broke"):
        fake_sweeper(tmp_path / "strict", FakeLauncher(fail=lambda x: True), n_trials=3).sweep([])
    res = yaml.safe_load((tmp_path / "strict" / "optimization_results.yaml").read_text())
    assert res["trials"][0]["value"] is None and "best_value" not in res  # recorded, then stopped
    study = fake_sweeper(tmp_path / "lenient", FakeLauncher(fail=lambda x: x > 0.5), n_trials=6,
                         max_failure_rate=1.0).sweep([])
    states = [t.state.name for t in study.trials]
    assert len(states) == 6 and "FAIL" in states and "COMPLETE" in states
    assert all(t.value is None or t.params["x"] <= 0.5 for t in study.trials)


# ------------------------------------------------------------------------ bad sweeps: before any job
def write_search(tmp_path: Path, params: dict) -> Path:
    (tmp_path / "hparams_search").mkdir(parents=True)
    body = {"defaults": ["/hparams_search/optuna"], "hydra": {"sweeper": {"params": params}}}
    (tmp_path / "hparams_search" / "bad.yaml").write_text("# @package _global_\n" + yaml.safe_dump(body))
    return tmp_path


@pytest.mark.parametrize(("params", "message"), [
    ({"model.optimizer.lrr": "interval(1e-4, 1e-3)"}, "Could not override 'model.optimizer.lrr'"),
    ({"model.prediction": "choice(epsilon, x0)"}, "model.prediction='x0' (str) must be one of"),
    ({"model.cond_drop_prob": "interval(0.0, 1.5)"}, "model.cond_drop_prob=1.5 is out of range: must be in [0, 1)"),
], ids=["unknown-key", "invalid-choice", "out-of-range-end"])
def test_a_bad_search_space_fails_before_any_job(tmp_path, params, message):
    conf = write_search(tmp_path / "conf", params)
    sweep_dir = tmp_path / "sweep"
    r = run("-m", f"hydra.searchpath=[file://{conf}]", "hparams_search=bad", "experiment=shapes_diffusion",
            f"hydra.sweep.dir={sweep_dir}", timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    assert message in r.stderr and "before any job" in r.stderr, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert not [p for p in sweep_dir.glob("*") if p.name.isdigit()]  # no job ran


# --------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_a_run_without_its_optimized_metric_fails_naming_it(tmp_path):
    r = run("debug=fast", *TINY, "optimized_metric=eval/classifier_fd", "logger=none",
            f"hydra.run.dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}")
    assert r.returncode != 0
    assert "optimized_metric=eval/classifier_fd was not produced" in r.stderr and "callbacks=eval" in r.stderr


FAMILY_TRIALS = [("diffusion", 3), ("gan", 2), ("vae", 2)]


@pytest.mark.slow
@pytest.mark.parametrize(("family", "n_trials"), FAMILY_TRIALS, ids=[f for f, _ in FAMILY_TRIALS])
def test_tiny_study_end_to_end(tmp_path, family, n_trials):
    from t2ilab.compat.wandb import read_offline_run

    sweep_dir = tmp_path / "sweep"
    extra = TINY if family == "diffusion" else ["data.num_train=256", "data.num_val=64", "seed=3"]
    r = run("-m", f"hparams_search={family}_optuna", f"model={family}", "debug=fast", *extra, *SMALL_EVAL,
            f"hydra.sweeper.n_trials={n_trials}", f"hydra.sweep.dir={sweep_dir}",
            f"paths.cache_dir={tmp_path / 'cache'}", timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    res = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    swept = set(OmegaConf.load(sweep_dir / "multirun.yaml").hydra.sweeper.params)
    assert len(res["trials"]) == n_trials and set(res["best_params"]) == swept
    values = []
    for trial in res["trials"]:
        run_dir = sweep_dir / str(trial["job"])
        assert (run_dir / "COMPLETE").is_file() and not (run_dir / "FAILED").exists()
        (wb,) = sorted((run_dir / "wandb").glob("offline-run-*"))
        logged = read_offline_run(wb)
        fd = logged["summary"]["eval/classifier_fd"]
        assert math.isfinite(fd) and fd == pytest.approx(trial["value"], rel=1e-5)  # what the sweeper was told
        assert "eval/prompt_accuracy" in logged["summary"]
        # grouped by sweep, tagged with this trial's values of every swept key
        assert logged["group"] == sweep_dir.name and logged["name"] == f"{sweep_dir.name}/{trial['job']}"
        assert logged["metrics"]["eval/classifier_fd"]["summary"] == ["min"]  # W&B sorts trials by the best FD
        assert {t.split("=", 1)[0] for t in logged["tags"]} >= swept
        assert {f"{k}={format_value(v)}"[:64] for k, v in trial["params"].items()} <= set(logged["tags"])
        values.append(trial["value"])
    assert res["best_value"] == min(values)
    assert res["best_params"] == res["trials"][values.index(min(values))]["params"]
