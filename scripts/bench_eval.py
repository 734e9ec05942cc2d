#!/usr/bin/env python
"""Evaluation throughput and seed spread: generate / Inception / CLIP images per second, FID-N wall
time (reference statistics cold and cached), and FID/KID/IS/CLIP over several seeds.

  python scripts/bench_eval.py                                  # random-init quickstart diffusion, N=256, 3 seeds
  python scripts/bench_eval.py --ckpt outputs/runs/.../checkpoints/last.ckpt --num-samples 1000
  python scripts/bench_eval.py --inception-weights weights-inception-2015-12-05-6726825d.pth --clip vit_b32
  python scripts/bench_eval.py --replay test --overrides data=fashion_mnist --num-reference 1000  # real floor

Without --inception-weights a RANDOMLY initialised InceptionV3 is used (same compute, meaningless
values); ``--clip vit_b32_random`` is ViT-B/32 with random weights (same compute as the real one).
Writes a JSON report (--out) and prints a summary table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

CLIPS = {  # metrics.clip settings by name
    "vit_b32": {"model_name": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"},
    "vit_b32_random": {"model_name": "ViT-B-32", "pretrained": None, "random_init": True},
}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", help="t2ilab checkpoint (default: a random-init model from --overrides)")
    p.add_argument("--replay", metavar="SPLIT", help="evaluate REAL images of SPLIT instead of a model (the "
                   "real-data floor; e.g. test images against the val reference of a class dataset)")
    p.add_argument("--overrides", nargs="*", default=["experiment=quickstart", "model.sampling.num_steps=25"],
                   help="train-config overrides for the random-init model and its data (without --ckpt)")
    p.add_argument("--num-samples", type=int, default=256)
    p.add_argument("--num-reference", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--inception-weights", help="torch-fidelity InceptionV3 .pth (default: random weights)")
    p.add_argument("--clip", default="vit_b32_random", choices=sorted(CLIPS))
    p.add_argument("--channels-last", action="store_true", help="metrics.channels_last=true")
    p.add_argument("--device", default="auto")
    p.add_argument("--cache-dir", help="reference cache (default: a fresh temp dir, so the first run is cold)")
    p.add_argument("--out", default="bench_eval.json")
    return p.parse_args()


def build(args: argparse.Namespace, device: str):
    """(model, datamodule) from a checkpoint or a random-init config."""
    from hydra import compose, initialize_config_dir

    from t2ilab.utils.builders import build_datamodule, build_encoder, build_model
    from t2ilab.utils.config import CONF_DIR

    if args.ckpt:
        from omegaconf import DictConfig

        from t2ilab.models.checkpoint import eval_data_configs
        from t2ilab.models.checkpoint import load_model

        model, train_cfg = load_model(args.ckpt)
        paths = {"paths": {"data_dir": train_cfg.paths.data_dir, "cache_dir": args.cache_dir},
                 "data": {}, "encoder": {}}
        data_cfg, enc_cfg = eval_data_configs(DictConfig(paths), train_cfg)
    else:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=[*args.overrides, "paths.run_dir=.", f"paths.cache_dir={args.cache_dir}"])
        data_cfg, enc_cfg = cfg.data, cfg.encoder
        model = None
    encoder = build_encoder(enc_cfg)
    dm = build_datamodule(data_cfg, encoder)
    if args.replay:
        from t2ilab.evaluation.replay import RealImageReplay

        return RealImageReplay(dm, args.replay), dm
    model = model if model is not None else build_model(cfg.model, encoder.dim)
    return model.to(device).eval(), dm


def main() -> None:
    args = parse()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from t2ilab.evaluation.engine import Evaluator
    from t2ilab.evaluation.inception import make_random_weights

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    tmp = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    args.cache_dir = args.cache_dir or str(tmp / "cache")
    weights = args.inception_weights or make_random_weights(tmp / "inception-random.pth")
    model, dm = build(args, device)
    runs = []
    for i, seed in enumerate(args.seeds):
        settings = {"num_samples": args.num_samples, "batch_size": args.batch_size, "seed": seed,
                    "num_reference": args.num_reference, "inception_weights": weights, "clip": CLIPS[args.clip],
                    "channels_last": args.channels_last, "kid_subset_size": min(1000, args.num_samples)}
        ev = Evaluator(settings, dm, args.cache_dir)
        t0 = time.perf_counter()
        ev.prepare(device)  # run 0: reference statistics computed (cold); later runs: cache hit
        prepare_s = time.perf_counter() - t0
        result = ev.evaluate(model)
        result["meta"].update(prepare_seconds=prepare_s, wall_seconds=time.perf_counter() - t0)
        runs.append(result)
        logging.info("seed %d: %s", seed, {k: round(v, 4) for k, v in result.items() if isinstance(v, float)})
    report = {"device": device_description(device), "args": vars(args), "runs": runs, "summary": summarise(runs)}
    Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    print(json.dumps(report["summary"], indent=1))
    print(f"report -> {args.out}", file=sys.stderr)


def summarise(runs: list[dict]) -> dict:
    n, first = runs[0]["meta"]["num_samples"], runs[0]["meta"]
    stage = {k: statistics.median(r["meta"]["stage_seconds"][k] for r in runs) for k in first["stage_seconds"]}
    out = {"num_samples": n, "num_reference": first.get("num_reference"),
           "images_per_second": {k: n / v for k, v in stage.items() if v > 0},
           "reference_cold_seconds": first["prepare_seconds"],
           "fid_n_wall_seconds_cached": statistics.median(r["meta"]["wall_seconds"] for r in runs[1:] or runs)}
    for k in ("fid", "kid_mean", "isc_mean", "precision", "recall", "clip_score", "prompt_accuracy"):
        vals = [r[k] for r in runs if k in r]
        if vals:
            out[k] = {"mean": statistics.fmean(vals), "sd": statistics.pstdev(vals) if len(vals) > 1 else 0.0,
                      "values": vals}
    return out


def device_description(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch threads " \
           f"{torch.get_num_threads()}, load average at end {load:.1f}"


if __name__ == "__main__":
    main()
