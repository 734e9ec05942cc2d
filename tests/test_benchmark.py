"""scripts/benchmark.py: device errors are clear, the baseline is size-matched, and --quick writes a
JSON whose measurements are present and positive (slow: ~1-2 min on 2 CPU cores)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from t2ilab.bench import common

ROOT = Path(__file__).resolve().parents[1]


def test_unknown_device_and_missing_cuda_are_clear_errors(monkeypatch):
    with pytest.raises(SystemExit, match="--device 'tpu'.*auto, cpu, cuda"):
        common.pick_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="sees no CUDA device.*--device cpu"):
        common.pick_device("cuda")
    dev, notes = common.pick_device("auto")
    assert dev.type == "cpu" and notes and "measuring on the CPU" in notes[0]


def test_baseline_unet_is_matched_within_ten_percent():
    from omegaconf import OmegaConf

    from t2ilab.bench.baseline import matched_unet
    from t2ilab.nets.unet import UNet

    for net in ({"channel_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [8], "base_channels": 32},
                {"channel_mult": [1, 2, 2], "num_res_blocks": 2, "attn_resolutions": [8], "base_channels": 64}):
        ours = sum(p.numel() for p in UNet(3, 64, 32, **net).parameters())
        _, _, n = matched_unet(ours, OmegaConf.create(net), 32, 3, 64)
        assert 0.9 <= n / ours <= 1.1, (net, n, ours)


def _positive_numbers(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _positive_numbers(v, f"{path}.{k}")
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield path, node


@pytest.mark.slow
def test_quick_benchmark_writes_every_measurement(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--device", "cpu", "--quick",
                           "--out", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["env"]["device_type"] == "cpu" and r["env"]["torch"] and r["env"]["git_sha"]
    for family in ("diffusion", "gan", "vae"):
        t = r["training"][family]
        assert t["images_per_second"] > 0 and t["peak_memory_mb"] > 0 and t["params_m"] > 0
    assert {"auto", "all_off", "bf16-mixed", "foreach_ema=False"} <= set(r["fast_paths"])
    assert all(v["images_per_second"] > 0 for v in r["fast_paths"].values())
    b = r["baseline"]
    assert b["images_per_second"] > 0 and b["ratio"] > 0 and 0.9 <= b["param_ratio"] <= 1.1
    for steps in (10, 25, 50):
        for g in ("1", "2"):
            assert r["sampling"][f"diffusion_{steps}steps_guidance{g}"]["images_per_second"] > 0
    assert r["sampling"]["gan"]["images_per_second"] > 0 and r["sampling"]["vae"]["images_per_second"] > 0
    assert r["evaluation"]["inception"] > 0 and r["evaluation"]["clip_vit_b32"] > 0
    assert r["fid"]["wall_seconds"] > 0 and r["fid"]["fid_10k_seconds_estimate"] > r["fid"]["wall_seconds"]
    te = r["text_encoding"]
    assert te["uncached_captions_per_second"] > 0 and te["cached_captions_per_second"] > te["uncached_captions_per_second"]
    bad = [(p, v) for p, v in _positive_numbers({k: r[k] for k in ("training", "baseline", "sampling")})
           if p.endswith(("images_per_second", "seconds_per_step")) and not v > 0]
    assert not bad, bad
    assert "t2ilab / baseline" in proc.stdout and "img/s" in proc.stdout
