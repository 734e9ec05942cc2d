"""Issue 14's conditioning options through the real entry points (slow: subprocesses):
``python -m t2ilab.train`` -> ``python -m t2ilab.sample`` -> ``python -m t2ilab.eval`` for token
conditioning, template prompt expansion, language-free training and the packaged MiniLM encoder.
Sample and eval rebuild the conditioning from the checkpoint alone (no option repeated)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.slow

TINY = ["debug=fast", "logger=csv", "callbacks.sample_grid=null", "sample_after=false", "data.num_train=128",
        "data.num_val=16", "data.num_test=32", "model.net.base_channels=16", "model.net.channel_mult=[1,2]",
        "model.net.num_res_blocks=1", "model.sampling.num_steps=2"]
VARIANTS = {
    "tokens": ["model.cond_type=tokens", "model.net.cross_attention_resolutions=[16]", "model.max_tokens=24"],
    "templates": ["prompt_expansion=templates"],
    "language_free": ["data.condition_source=image_embedding", "model.cond_noise=0.1"],
    "minilm": ["encoder=minilm", "model.cond_type=tokens", "model.net.cross_attention_resolutions=[16]"],
}


def run(module: str, *args: str) -> str:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "1"}
    r = subprocess.run([sys.executable, "-m", f"t2ilab.{module}", *args], capture_output=True, text=True,
                       timeout=600, env=env)
    assert r.returncode == 0, f"t2ilab.{module} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    return r.stdout + r.stderr


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    from t2ilab.evaluation.inception import make_random_weights

    return make_random_weights(tmp_path_factory.mktemp("inception") / "inception-random.pth")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_train_sample_eval(variant, tmp_path, weights):
    cache, run_dir = tmp_path / "cache", tmp_path / "train"
    run("train", f"hydra.run.dir={run_dir}", f"paths.cache_dir={cache}", *TINY, *VARIANTS[variant])
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    meta = torch.load(ckpt, map_location="cpu", weights_only=False)["t2ilab"]
    assert (meta["token_dim"] > 0) == ("model.cond_type=tokens" in VARIANTS[variant])
    run("sample", f"ckpt_path={ckpt}", 'prompts=["a red circle and a blue square"]', "num_per_prompt=2",
        f"out_dir={tmp_path / 'samples'}", f"paths.cache_dir={cache}", "+sampling={num_steps: 2}")
    assert len(list((tmp_path / "samples").glob("*.png"))) == 2
    run("eval", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'eval'}", f"paths.cache_dir={cache}", "logger=none",
        "metrics.num_samples=16", "metrics.batch_size=8", "metrics.kid_subset_size=8", "metrics.isc_splits=2",
        f"metrics.inception_weights={weights}", "metrics.clip.random_init=true", "metrics.classifier.max_train=256")
    result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for k in ("fid", "clip_score", "prompt_accuracy"):
        assert math.isfinite(result[k]), (k, result)
    if variant == "templates":  # the encoder cache holds the EXPANDED captions: training encoded those
        shards = [torch.load(p, weights_only=True) for p in cache.glob("text_embeddings/*/shard-*.pt")]
        cached = {c for s in shards for c in s["captions"]}
        assert any("; " in c and ": " in c for c in cached) and not any(c == "a red circle and a blue square"
                                                                        for c in cached)
