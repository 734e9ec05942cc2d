"""Offline behaviour: a missing weights file fails fast with a message naming the file and the
option; ``metrics.skip_unavailable=true`` skips exactly the affected metrics and records why."""

from __future__ import annotations

import json
import socket
import time

import pytest
import torch

from t2ilab.encoders.errors import WeightsUnavailableError
from t2ilab.evaluation.engine import Evaluator
from t2ilab.evaluation.results import write_metrics_json


def _dead_url() -> str:
    """A local URL nothing listens on (connection refused at once, like a firewalled host)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/weights-inception-2015-12-05-6726825d.pth"


def test_missing_inception_file_names_file_and_option(tmp_path):
    from t2ilab.evaluation.inception import InceptionExtractor

    missing = tmp_path / "nowhere" / "inception.pth"
    with pytest.raises(WeightsUnavailableError) as e:
        InceptionExtractor(str(missing))
    assert str(missing) in str(e.value) and "metrics.inception_weights" in str(e.value)


def test_no_network_and_no_cached_inception_fails_fast(tmp_path, monkeypatch):
    from t2ilab.evaluation.inception import resolve_weights

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # nothing cached
    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as e:
        resolve_weights(None, timeout=2, url=_dead_url())
    assert time.perf_counter() - t0 < 5
    msg = str(e.value)
    assert "metrics.inception_weights=/path/to/weights-inception-2015-12-05-6726825d.pth" in msg
    assert "metrics.skip_unavailable=true" in msg and str(tmp_path / "hub") in msg


def test_missing_clip_checkpoint_names_file_and_option(tmp_path):
    from t2ilab.evaluation.clip import ClipScorer

    missing = tmp_path / "clip.safetensors"
    with pytest.raises(WeightsUnavailableError) as e:
        ClipScorer({"model_name": "ViT-B-32", "pretrained": "laion2b_s34b_b79k", "checkpoint_path": str(missing)},
                   None, "cpu")
    assert str(missing) in str(e.value) and "metrics.clip.checkpoint_path" in str(e.value)


def test_offline_hub_clip_names_the_option(monkeypatch, tmp_path):
    from t2ilab.evaluation.clip import ClipScorer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # empty local cache
    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match=r"metrics\.clip\.checkpoint_path"):
        ClipScorer({"model_name": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"}, None, "cpu")
    assert time.perf_counter() - t0 < 10


def test_unavailable_weights_fail_before_generating(shapes_dm, metrics_cfg, noise_model, tmp_path):
    model = noise_model(64)
    ev = Evaluator(metrics_cfg(inception_weights=str(tmp_path / "missing.pth")), shapes_dm, str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match="metrics.inception_weights"):
        ev.evaluate(model)
    assert model.calls == 0


def test_skip_unavailable_skips_and_records_why(shapes_dm, metrics_cfg, noise_model, tmp_path):
    missing_clip = str(tmp_path / "clip.bin")
    cfg = metrics_cfg(inception_weights=str(tmp_path / "missing.pth"), skip_unavailable=True,
                      clip={"model_name": "ViT-B-32", "pretrained": "laion2b_s34b_b79k",
                            "checkpoint_path": missing_clip})
    r = Evaluator(cfg, shapes_dm, str(tmp_path)).evaluate(noise_model(64))
    assert set(r["skipped"]) == {"fid", "kid", "isc", "prc", "clip_score"}
    assert "metrics.inception_weights" in r["skipped"]["fid"] and missing_clip in r["skipped"]["clip_score"]
    assert not {"fid", "kid_mean", "isc_mean", "precision", "clip_score"} & set(r)  # no number at all
    assert 0 <= r["prompt_accuracy"] <= 1  # what needs no missing weights still runs
    saved = json.loads(write_metrics_json(r, tmp_path / "run").read_text())
    assert saved["skipped"] == r["skipped"]
