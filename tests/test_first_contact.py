"""What a new user meets first, through the real entry points in subprocesses (as they run them):
every entry point starts (``--help``) with the installed Hydra; a user error is one message and exit 2
with no traceback (``T2ILAB_DEBUG=1`` shows it); a short training run prints no library noise, puts
the config tree in a file, and a mid-epoch resume gets no "dataloader is not resumable" warning."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import TINY

HYDRA_ENTRY_POINTS = ["train", "sample", "eval", "edit", "roundtrip"]
NOISE = ["Tip: For seamless cloud logging", "LeafSpec", "anonymous setting", "not resumable",
         "Set the environment variable HYDRA_FULL_ERROR"]


def run(module: str, *args: str, timeout: int = 300, env: dict | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("T2ILAB_DEBUG", "HYDRA_FULL_ERROR")}
    full_env.update({"WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", **(env or {})})
    return subprocess.run([sys.executable, "-m", f"t2ilab.{module}", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=cwd)


@pytest.mark.parametrize("module", [*HYDRA_ENTRY_POINTS, "report", "reproduce"])
def test_every_entry_point_starts_and_shows_its_help(module):
    """A start-up crash (an import error, a plugin Hydra cannot scan) fails here, never only in a user's hands."""
    r = run(module, "--help", timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "Traceback" not in out
    if module in HYDRA_ENTRY_POINTS:
        assert "Config groups" in r.stdout and "python -m t2ilab." in r.stdout
        groups = r.stdout.split("Config groups", 1)[1]
        # only the groups this entry point takes: postprocess belongs to sample, train refuses it
        assert ("postprocess: " in groups) == (module == "sample"), groups
        assert ("model: " in groups) == (module == "train"), groups
    else:
        assert "usage:" in r.stdout.lower()


@pytest.mark.parametrize(("args", "says"), [
    (["trainer.max_steps=abc"], "trainer.max_steps='abc' (str) must be an integer"),
    (["model.prediction=eps"], "must be one of epsilon, v_prediction"),
    (["model.nope=1"], "+model.nope=1"),
    (["model=difusion"], "Available options in 'model'"),
    (["trainer.max_steps=[1"], "trainer.max_steps=[1"),
])
def test_a_config_error_is_one_message_exit_2_no_traceback(tmp_path, args, says):
    r = run("train", *args, f"hydra.run.dir={tmp_path / 'run'}", "logger=none", timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 2, out[-3000:]
    assert says in out
    assert "Traceback" not in out and "Error executing job" not in out
    assert "Config search path" not in out  # Hydra's search-path dump is not the user's concern
    assert "T2ILAB_DEBUG=1" in r.stderr  # ... and how to see more


def test_an_error_raised_while_building_the_model_is_one_message_too_and_print_config_prints_the_tree(tmp_path):
    """A constructor's input check (Hydra 1.3 wraps it in InstantiationException) reaches the user unwrapped;
    ``print_config=true`` has printed the tree before (the model is built after the config is saved)."""
    r = run("train", "model=gan", "model.cond_type=tokens", f"hydra.run.dir={tmp_path / 'run'}", "logger=none",
            "data.num_train=64", "data.num_val=16", "print_config=true", timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 2, out[-3000:]
    assert "model.cond_type=tokens: the gan family conditions on the pooled vector only" in r.stderr
    assert "Traceback" not in out and "InstantiationException" not in out and "Error in call to target" not in out
    assert "optimized_metric" in r.stdout and "generator" in r.stdout  # the tree, on the console


def test_t2ilab_debug_shows_the_traceback(tmp_path):
    r = run("train", "trainer.max_steps=abc", f"hydra.run.dir={tmp_path / 'run'}", "logger=none",
            env={"T2ILAB_DEBUG": "1"}, timeout=120)
    assert r.returncode != 0 and "Traceback" in r.stderr and "trainer.max_steps='abc'" in r.stderr


@pytest.mark.slow  # two short trainings (~23 s on 2 cores); CI runs it (.ci/run leg 1)
def test_a_short_run_is_quiet_keeps_the_config_in_a_file_and_resumes_without_the_dataloader_warning(tmp_path):
    run_dir = tmp_path / "run"
    common = ["debug=fast", *TINY, f"hydra.run.dir={run_dir}", f"paths.cache_dir={tmp_path / 'cache'}",
              "callbacks.sample_grid=null", "sample_after=false"]
    first = run("train", *common, timeout=600)
    out = first.stdout + first.stderr
    assert first.returncode == 0, out[-3000:]
    for noise in NOISE:
        assert noise not in out, f"{noise!r} printed:\n{out[-3000:]}"
    tree = (run_dir / "config_tree.txt").read_text()
    assert "base_channels: 16" in tree and "base_channels: 16" not in out  # in the file, not on the console
    assert str(run_dir / "config_tree.txt") in out  # a one-line pointer to it
    # resume mid-epoch (step 4 of an epoch of 256 / batch size batches): Lightning is told the loader resumes
    second = run("train", *common, "trainer.max_steps=6", timeout=600)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out[-3000:]
    assert "resuming from" in out or "ckpt_path=auto: resuming" in out
    for noise in NOISE:
        assert noise not in out, f"{noise!r} printed on resume:\n{out[-3000:]}"


@pytest.mark.parametrize(("arg", "says"), [
    ("trainer.max_steps=0", "trainer.max_steps=0 is out of range: must be >= 1"),
    ("trainer.max_steps=-1", "trainer.max_steps=-1 is out of range: must be >= 1"),
    ("data.batch_size=0", "data.batch_size=0 is out of range: must be >= 1"),
    ("model.optimizer.lr=-1", "model.optimizer.lr=-1 is out of range: must be > 0"),
    ("model.cond_drop_prob=1.5", "model.cond_drop_prob=1.5 is out of range: must be in [0, 1)"),
])
def test_a_value_of_the_right_type_but_out_of_range_is_refused_before_any_work(tmp_path, arg, says):
    r = run("train", arg, f"hydra.run.dir={tmp_path / 'run'}", "logger=none", timeout=120)
    assert r.returncode == 2 and says in r.stderr, (r.stdout + r.stderr)[-2000:]
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "manifest.json").exists()
