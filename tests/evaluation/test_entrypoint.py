"""End to end through the real entry points (slow: subprocesses, random-weight Inception, random
ViT-B-32 CLIP): per family, ``python -m t2ilab.train model=<family> debug=fast callbacks=eval``
(the training callback logs eval/* to metrics.csv) then ``python -m t2ilab.eval ckpt_path=...``
(metrics.json + offline W&B run). And a 2-process gloo DDP training with the callback, whose
sharded + gathered evaluation must equal the single-process evaluation of the same checkpoint."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from t2ilab.utils.config import CONF_DIR

pytestmark = pytest.mark.slow

METRICS = ("fid", "kid_mean", "isc_mean", "precision", "recall", "clip_score", "prompt_accuracy")
# family-specific speed-ups only (the eval command itself never names the family)
FAMILY_ARGS = {"diffusion": ["model.net.base_channels=16", "model.net.channel_mult=[1,2]",
                             "model.net.num_res_blocks=1", "model.sampling.num_steps=2"]}
FAMILIES = [pytest.param(f, marks=() if (CONF_DIR / "model" / f"{f}.yaml").is_file() else
                         pytest.mark.skip(reason=f"conf/model/{f}.yaml does not exist (yet)"))
            for f in ("diffusion", "gan", "vae")]


def small_metrics(weights: str) -> list[str]:
    return ["metrics.num_samples=16", "metrics.batch_size=8", "metrics.kid_subset_size=8", "metrics.isc_splits=2",
            f"metrics.inception_weights={weights}", "metrics.clip.random_init=true",
            "metrics.classifier.max_train=256"]


def run(module: str, *args: str, timeout: int = 600) -> None:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "1"}
    r = subprocess.run([sys.executable, "-m", f"t2ilab.{module}", *args], capture_output=True, text=True,
                       timeout=timeout, env=env)
    assert r.returncode == 0, f"t2ilab.{module} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"


def train(root: Path, weights: str, *extra: str) -> Path:
    run_dir = root / "train"
    run("train", "debug=fast", "logger=csv", f"hydra.run.dir={run_dir}", f"paths.cache_dir={root / 'cache'}",
        "callbacks=eval", "callbacks.sample_grid=null", "callbacks.evaluation.every_n_steps=3",
        "data.num_train=256", "data.num_val=32", *small_metrics(weights), *extra)
    return run_dir


def csv_evals(run_dir: Path) -> dict[int, dict[str, str]]:
    rows = csv.DictReader(open(run_dir / "csv" / "version_0" / "metrics.csv"))
    return {int(r["step"]): r for r in rows if r.get("eval/fid")}


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    from t2ilab.evaluation.inception import make_random_weights

    return make_random_weights(tmp_path_factory.mktemp("inception") / "inception-random.pth")


@pytest.fixture(scope="module", params=FAMILIES)
def evaluated(request, tmp_path_factory, weights) -> tuple[str, Path, Path]:
    family, root = request.param, tmp_path_factory.mktemp(f"eval_{request.param}")
    run_dir = train(root, weights, f"model={family}", *FAMILY_ARGS.get(family, []))
    eval_dir = root / "eval"
    run("eval", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={eval_dir}",
        f"paths.cache_dir={root / 'cache'}", *small_metrics(weights))
    return family, run_dir, eval_dir


def test_eval_entry_point_writes_finite_metrics_and_wandb_summary(evaluated):
    from t2ilab.compat.wandb import read_offline_run

    family, _, eval_dir = evaluated
    result = json.loads((eval_dir / "metrics.json").read_text())
    for k in METRICS:
        assert isinstance(result.get(k), (int, float)) and math.isfinite(result[k]), (k, result)
    assert result["meta"]["checkpoint"]["family"] == family and result["meta"]["num_samples"] == 16
    assert result["meta"]["checkpoint"]["global_step"] >= 4 and result["skipped"] == {}
    summary = read_offline_run(eval_dir)["summary"]  # wandb>=0.19 offline runs have no wandb-summary.json
    for k in METRICS:
        assert summary[f"eval/{k}"] == pytest.approx(result[k]), k
    # the sample table (image, prompt, per-image CLIP score, label), one row per kept sample
    assert summary["eval/samples/_type"] == "table-file" and summary["eval/samples/nrows"] == 16
    assert summary["trainer/global_step"] == result["meta"]["checkpoint"]["global_step"]


def test_training_callback_logged_eval_metrics(evaluated):
    _, run_dir, eval_dir = evaluated
    last = json.loads((eval_dir / "metrics.json").read_text())["meta"]["checkpoint"]["global_step"]
    evals = csv_evals(run_dir)  # when global_step crosses a multiple of 3, and when training ends
    assert max(evals) == last and all(s % 3 == 0 or s == last for s in evals), sorted(evals)
    for k in METRICS:
        assert math.isfinite(float(evals[4][f"eval/{k}"])), k
    # the entry point found the callback's cached reference statistics (same key: no real image re-read)
    step_dir = max((run_dir / "eval").glob("step_*"))
    callback_json = json.loads((step_dir / "metrics.json").read_text())
    assert callback_json["meta"]["reference_key"] == json.loads((eval_dir / "metrics.json").read_text())["meta"][
        "reference_key"]
    assert "reference statistics: cache hit" in (eval_dir / "eval.log").read_text()


def test_ddp_callback_equals_single_process_evaluation(tmp_path, weights):
    """2 CPU processes (gloo): each generates half of the chunks, records are all-gathered, rank 0
    computes. The eval entry point (1 process) on the same step-4 weights must give the same numbers."""
    run_dir = train(tmp_path, weights, "model=diffusion", *FAMILY_ARGS["diffusion"], "+trainer.strategy=ddp",
                    "trainer.devices=2", "trainer.accelerator=cpu")
    ddp = json.loads((run_dir / "eval" / "step_00000004" / "metrics.json").read_text())  # on_train_end
    assert set(csv_evals(run_dir)) == {3, 4}
    step4 = run_dir / "checkpoints" / "step=0000004.ckpt"  # '=' in a value: Hydra needs it quoted
    run("eval", f"ckpt_path='{step4}'", f"hydra.run.dir={tmp_path / 'eval'}",
        f"paths.cache_dir={tmp_path / 'cache'}", "logger=none", *small_metrics(weights))
    single = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for k in METRICS:
        assert ddp[k] == pytest.approx(single[k], rel=1e-4, abs=1e-6), (k, ddp[k], single[k])
