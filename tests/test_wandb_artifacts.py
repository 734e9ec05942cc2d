"""Checkpoints as W&B model artifacts (``logger.wandb.log_model``), read back from the offline run; a
``wandb:`` checkpoint reference offline is one clear message."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cli_helpers import TINY, run
from t2ilab.compat.wandb import read_offline_run


@pytest.mark.slow  # a short training with artifact logging (~25 s on 2 cores)
def test_log_model_all_logs_every_checkpoint_as_a_model_artifact_staged_in_the_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    run("train", "debug=fast", *TINY, f"hydra.run.dir={run_dir}", f"paths.cache_dir={tmp_path / 'cache'}",
        "logger.wandb.log_model=all", "callbacks.sample_grid=null", timeout=600)
    logged = read_offline_run(run_dir)
    models = [a for a in logged["artifacts"] if a["type"] == "model"]
    assert models and all("latest" in a["aliases"] for a in models), logged["artifacts"]
    assert any(a["metadata"].get("original_filename", "").endswith(".ckpt") for a in models)
    staged = list((run_dir / "wandb" / "data").rglob("*"))  # W&B's staging copy lives in the run dir
    assert any(p.is_file() for p in staged), staged


def test_a_bad_log_model_value_and_an_offline_artifact_reference_are_one_message(tmp_path):
    from t2ilab.tracking.artifacts import log_model_mode, resolve_checkpoint

    assert log_model_mode("last") is True and log_model_mode("all") == "all" and log_model_mode(False) is False
    with pytest.raises(ValueError, match="logger.wandb.log_model='every': use false"):
        log_model_mode("every")
    env = {**os.environ, "WANDB_MODE": "offline"}
    r = subprocess.run([sys.executable, "-m", "t2ilab.sample", "ckpt_path=wandb:lab/t2ilab/model-abc:best",
                        "prompts=[x]", f"out_dir={tmp_path / 's'}"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "names a W&B model artifact, which needs W&B online" in r.stderr
    assert resolve_checkpoint("/some/last.ckpt", tmp_path) == "/some/last.ckpt"
