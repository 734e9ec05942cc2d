"""Sampling throughput per family / sampler setting, and the cost of text encoding with and
without the embedding cache."""

from __future__ import annotations

import tempfile
import time
from typing import Any

import torch

from t2ilab.bench.common import sync


def measure_generate(model: Any, cond: torch.Tensor, device: torch.device, repeats: int = 2,
                     **sampling: Any) -> dict[str, Any]:
    """images/s of ``model.generate`` on a batch (``cond`` rows), after one warm-up call."""
    model = model.to(device).eval()
    cond = cond.to(device)
    gens = [torch.Generator().manual_seed(i) for i in range(cond.shape[0])]
    model.generate(cond, generator=gens, **sampling)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        model.generate(cond, generator=gens, **sampling)
    sync(device)
    seconds = (time.perf_counter() - t0) / repeats
    return {"images_per_second": cond.shape[0] / seconds, "seconds_per_batch": seconds,
            "batch_size": int(cond.shape[0]), **sampling}


def measure_text_encoding(cfg_encoder: Any, captions: list[str]) -> dict[str, Any]:
    """Captions/s through the encoder (cold: no cache entry) and from the cache (second call)."""
    from omegaconf import OmegaConf

    from t2ilab.utils.builders import build_encoder

    with tempfile.TemporaryDirectory(prefix="t2ilab-bench-cache-") as tmp:
        node = OmegaConf.merge(cfg_encoder, {"cache_dir": tmp})
        enc = build_encoder(node)
        enc.encode_text(captions[:2])  # model load / first-call costs are not encoding
        fresh = [f"{c} ." for c in captions]  # never seen by the cache
        t0 = time.perf_counter()
        enc.encode_text(fresh)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        enc.encode_text(fresh)
        hit = time.perf_counter() - t0
    return {"captions": len(captions), "uncached_captions_per_second": len(captions) / cold,
            "cached_captions_per_second": len(captions) / hit, "cache_speedup": cold / hit}
