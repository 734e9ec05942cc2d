"""How runs end (issue 11): a finished run is COMPLETE, every other ending is FAILED with its
reason in the marker, train.log and the W&B run (non-zero exit code); SIGTERM writes a
checkpoint of the current step first and the process exits 143, never 0; ``logger=none`` trains."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from t2ilab.tracking import run_status
from t2ilab.compat.wandb import read_offline_run
from cli_helpers import TINY, run, wandb_run


def test_exit_codes_and_reasons_are_never_success():
    assert run_status.exit_code(SIGTERMException()) == 143  # Lightning's SIGTERM is SystemExit(None) = 0
    assert run_status.exit_code(KeyboardInterrupt()) == 130
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            sys.exit(1)  # what Lightning does on Ctrl-C
    except SystemExit as e:
        assert run_status.exit_code(e) == 130 and "SIGINT" in run_status.describe(e, 7)
    assert run_status.exit_code(SystemExit(0)) == 1 and run_status.exit_code(ValueError("x")) == 1
    assert run_status.describe(ValueError("bad lr"), 3) == "ValueError: bad lr at global step 3"


def test_markers_are_exclusive(tmp_path):
    run_status.mark(tmp_path, "FAILED", "boom", 2)
    run_status.mark(tmp_path, "COMPLETE", step=5)
    assert run_status.status_of(tmp_path)["status"] == "COMPLETE" and not (tmp_path / "FAILED").exists()
    with pytest.raises(ValueError, match="COMPLETE"):
        run_status.mark(tmp_path, "DONE")


def test_logger_none_trains_and_completes_with_the_final_step_checkpointed(tmp_path):
    run_dir = tmp_path / "run"
    # 5 steps, periodic checkpoints every 3: last.ckpt must still hold step 5 (it used to stay at 3)
    # sample_after with a grid interval landing on the last step: the final grid is drawn once (final_grid.png)
    run("train", "debug=fast", *TINY, "logger=none", "trainer.max_steps=5", "sample_after=true",
        "callbacks.sample_grid.every_n_steps=5", "callbacks.model_checkpoint.every_n_train_steps=3",
        f"hydra.run.dir={run_dir}", f"paths.cache_dir={tmp_path / 'c'}")
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["final", "final_grid.png"]
    assert len(list((run_dir / "samples" / "final").glob("*.png"))) == 2 * 2  # the grid callback's prompts x images
    assert run_status.status_of(run_dir)["status"] == "COMPLETE"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and not (run_dir / "wandb").exists()
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 5 and (run_dir / "checkpoints" / "step=0000003.ckpt").is_file()


@pytest.mark.slow
def test_an_exception_during_fit_is_recorded_as_a_failure(tmp_path):
    run_dir = tmp_path / "run"
    # an extra optimiser keyword is free-form in the schema (any torch optimiser's arguments are allowed), so
    # AdamW only rejects `momentum` when fit builds the optimiser, after the W&B run started
    r = run("train", "debug=fast", *TINY, "+model.optimizer.momentum=0.9", f"hydra.run.dir={run_dir}",
            f"paths.cache_dir={tmp_path / 'c'}", check=False)
    assert r.returncode != 0
    failed = run_status.status_of(run_dir)
    assert failed["status"] == "FAILED" and "TypeError" in failed["reason"] and "momentum" in failed["reason"]
    assert "run FAILED: TypeError" in (run_dir / "train.log").read_text()
    logged = read_offline_run(wandb_run(run_dir))
    assert logged["exit_code"] not in (None, 0) and "momentum" in logged["summary"]["failure"]


@pytest.mark.slow
def test_sigterm_checkpoints_the_current_step_marks_failed_and_exits_143(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = subprocess.Popen([sys.executable, "-m", "t2ilab.train", "debug=fast", *TINY, "trainer.max_steps=100000",
                             "trainer.val_check_interval=100000", "callbacks.model_checkpoint.every_n_train_steps=3",
                             "callbacks.sample_grid=null", f"hydra.run.dir={run_dir}",
                             f"paths.cache_dir={tmp_path / 'c'}"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while not list((run_dir / "checkpoints").glob("step=*.ckpt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=120)
    assert rc == 143, proc.stderr.read()[-3000:]
    failed = run_status.status_of(run_dir)
    assert failed["status"] == "FAILED" and "SIGTERM" in failed["reason"]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == failed["step"] >= 3  # the interrupted step, not only the periodic one
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))  # the atomic save left no temp file
    logged = read_offline_run(wandb_run(run_dir))
    assert logged["exit_code"] == 143 and "SIGTERM" in logged["summary"]["failure"]


def test_a_mistyped_value_fails_before_any_work_and_is_marked(tmp_path):
    run_dir = tmp_path / "run"
    r = run("train", "debug=fast", *TINY, "trainer.max_steps=abc", f"hydra.run.dir={run_dir}",
            f"paths.cache_dir={tmp_path / 'c'}", check=False)
    assert r.returncode != 0 and "trainer.max_steps='abc' (str) must be an integer" in r.stderr
    failed = run_status.status_of(run_dir)
    assert failed["status"] == "FAILED" and "trainer.max_steps" in failed["reason"]
    assert not (run_dir / "wandb").exists() and not (run_dir / "checkpoints").exists()  # nothing was started
