"""Evaluation throughput (Inception and CLIP image features) and end-to-end FID-N wall time
(generation included) through the project's ``Evaluator``.

No weights can be assumed here: InceptionV3 and CLIP ViT-B/32 run with random weights (identical
compute; the JSON says so) unless real ones are given."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from t2ilab.bench.common import sync


def _rate(fn: Any, images: torch.Tensor, device: torch.device) -> float:
    fn(images[: min(8, len(images))])  # warm-up
    sync(device)
    t0 = time.perf_counter()
    fn(images)
    sync(device)
    return len(images) / (time.perf_counter() - t0)


def measure_features(device: torch.device, inception_weights: str, n: int, batch: int, tmp: Path) -> dict[str, Any]:
    """images/s through the Inception feature extractor (fp32, as FID needs) and CLIP's image tower."""
    from t2ilab.evaluation.clip import ClipScorer
    from t2ilab.evaluation.inception import InceptionExtractor

    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out: dict[str, Any] = {"images": n, "batch_size": batch}
    for cl in (False, True):
        inc = InceptionExtractor(inception_weights, device, batch_size=batch, channels_last=cl, cache_dir=tmp)
        out["inception_channels_last" if cl else "inception"] = _rate(inc, images, device)
        del inc
    clip = ClipScorer({"model_name": "ViT-B-32", "pretrained": None, "random_init": True, "batch_size": batch},
                      tmp, device)
    text = clip.encode_prompts(["a photo"] * n)
    out["clip_vit_b32"] = _rate(lambda x: clip.score(x, text[: len(x)]), images, device)
    out["weights"] = "random (same compute as the released weights; values meaningless)"
    return out


def measure_fid_wall(model: Any, datamodule: Any, device: torch.device, inception_weights: str, n: int,
                     batch: int, tmp: Path, **sampling: Any) -> dict[str, Any]:
    """Wall time of FID at N samples: reference statistics (cold, once) and a full evaluation with
    generation + Inception features + Frechet distance (reference cached)."""
    from t2ilab.evaluation.engine import Evaluator

    settings = {"num_samples": n, "batch_size": batch, "seed": 0, "num_reference": min(n, 10_000),
                "inception_weights": str(inception_weights), "fid": True, "kid": False, "isc": False, "prc": False,
                "clip_score": False, "prompt_accuracy": False, "classifier_fd": False,
                "sampling": dict(sampling) or None}
    ev = Evaluator(settings, datamodule, str(tmp / "ref-cache"))
    t0 = time.perf_counter()
    ev.prepare(device)
    cold = time.perf_counter() - t0
    model = model.to(device).eval()
    sync(device)
    t0 = time.perf_counter()
    result = ev.evaluate(model)
    sync(device)
    wall = time.perf_counter() - t0
    stages = result["meta"].get("stage_seconds", {})
    return {"num_samples": n, "reference_seconds_cold": cold, "wall_seconds": wall,
            "fid_10k_seconds_estimate": wall * 10_000 / n, "extrapolated": n != 10_000,
            "stage_seconds": stages, "sampling": dict(sampling)}
