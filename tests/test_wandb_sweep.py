"""``python -m t2ilab.sweeps.to_wandb``: the W&B sweep config of an Optuna search (sweeps/wandb_sweep.py) has the
study's search space and objective, passes wandb's own sweep-config validation (the ``sweeps`` package that
``wandb sweep`` / the local controller use), and every command the agent would run composes into a valid
training config; an agent's run keeps the agent's W&B run id."""

from __future__ import annotations

import warnings

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from t2ilab.cli.to_wandb import main
from t2ilab.utils.config import CONF_DIR


def _write(tmp_path, *overrides):
    out = tmp_path / "sweep.yaml"
    assert main([*overrides, "--out", str(out)]) == 0
    return yaml.safe_load(out.read_text())


def test_the_diffusion_search_becomes_a_wandb_sweep_with_the_same_space_and_objective(tmp_path):
    sweep = _write(tmp_path, "hparams_search=diffusion_optuna", "experiment=shapes_diffusion")
    assert sweep["method"] == "bayes" and sweep["metric"] == {"name": "eval/classifier_fd", "goal": "minimize"}
    assert sweep["parameters"] == {
        "model.ema.decay": {"values": [0.99, 0.995, 0.999]},
        "model.lr_warmup_steps": {"values": [0, 100, 500]},
        "model.optimizer.lr": {"distribution": "log_uniform_values", "min": 5e-5, "max": 1e-3},
        "model.prediction": {"values": ["epsilon", "v_prediction"]},
        "model.cond_drop_prob": {"distribution": "uniform", "min": 0.0, "max": 0.2}}
    assert sweep["command"] == ["${env}", "${interpreter}", "-m", "t2ilab.train", "hparams_search=diffusion_optuna",
                                "experiment=shapes_diffusion", "logger=wandb", "${args_no_hyphens}"]


SEARCHES = {"diffusion_optuna": "shapes_diffusion", "gan_optuna": "shapes_gan", "vae_optuna": "shapes_vae"}


@pytest.mark.parametrize("search", sorted(SEARCHES))
def test_wandbs_own_validation_accepts_the_sweep(tmp_path, search):
    with warnings.catch_warnings():  # sweeps 0.2 imports pydantic with v1-style config keys
        warnings.simplefilter("ignore")
        import sweeps

    sweep = _write(tmp_path, f"hparams_search={search}", f"experiment={SEARCHES[search]}")
    assert sweeps.schema_violations_from_proposed_config(sweep) == []
    sweeps.SweepConfig(sweep)  # what wandb's controller builds before creating the sweep (raises when invalid)
    broken = {**sweep, "parameters": {**sweep["parameters"], "x": {"distribution": "log_uniform_values"}}}
    assert sweeps.schema_violations_from_proposed_config(broken)  # the validator does reject a bad sweep


@pytest.mark.parametrize("search", ["vae_optuna"])
def test_every_agent_command_at_the_ends_of_the_space_is_a_valid_training_config(tmp_path, search):
    """What the converter checks before writing, done again here by hand from the written file."""
    from t2ilab.tracking.objective import check_trial_config

    sweep = _write(tmp_path, f"hparams_search={search}", f"experiment={SEARCHES[search]}")
    fixed = [a for a in sweep["command"][4:] if not a.startswith("${")]
    for pick in (0, -1):  # first / last value of every parameter
        args = []
        for key, p in sweep["parameters"].items():
            value = p["values"][pick] if "values" in p else p["value"] if "value" in p else p["min" if pick == 0 else "max"]
            args.append(f"{key}={value}")
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=[*fixed, *args])
        check_trial_config(cfg)
        assert OmegaConf.select(cfg, "callbacks.evaluation") is not None  # the run evaluates the objective
        assert cfg.optimized_metric == sweep["metric"]["name"]


def test_a_search_whose_values_do_not_fit_the_model_is_refused_before_writing(tmp_path, capsys):
    """gan_optuna's keys (model.optimizer_g, ...) do not exist on the default diffusion model."""
    assert main(["hparams_search=gan_optuna", "--out", str(tmp_path / "s.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error (the agent's command") and "optimizer_g" in err and "Traceback" not in err
    assert not (tmp_path / "s.yaml").exists()


def test_a_config_without_a_search_space_is_one_message_and_exit_2(tmp_path, capsys):
    assert main(["experiment=shapes_diffusion", "--out", str(tmp_path / "s.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: the composed config has no search space") and "hparams_search=" in err
    assert "Traceback" not in err and not (tmp_path / "s.yaml").exists()


def test_a_run_launched_by_a_wandb_agent_keeps_the_agents_run_id(tmp_path, monkeypatch):
    from t2ilab.tracking.loggers import wandb_identity

    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")
    monkeypatch.setenv("WANDB_RUN_ID", "agentrun")
    cfg = OmegaConf.create({"logger": {"wandb": {"id": None, "name": None}}})
    wandb_identity(cfg, tmp_path)
    assert cfg.logger.wandb.id == "agentrun" and (tmp_path / "wandb_id").read_text().strip() == "agentrun"
    monkeypatch.delenv("WANDB_SWEEP_ID")  # WANDB_RUN_ID alone (no agent) does not name the run
    cfg = OmegaConf.create({"logger": {"wandb": {"id": None, "name": None}}})
    (tmp_path / "other").mkdir()
    wandb_identity(cfg, tmp_path / "other")
    assert cfg.logger.wandb.id not in (None, "agentrun")
