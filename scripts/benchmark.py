#!/usr/bin/env python
"""t2ilab's speed in one command: training images/s per family (real Lightning path), every fast
path's effect, a plain diffusers UNet2DModel loop at the same size as the baseline, sampling,
evaluation-feature and text-encoding throughput, and end-to-end FID-N wall time.

  python scripts/benchmark.py --device cpu --quick --out bench.json      # < 2 min on 2 CPU cores
  python scripts/benchmark.py --device cuda --out bench_gpu.json         # default (GPU-sized) config
  python scripts/benchmark.py --device cpu --scaling --out scaling.json  # batch 16..256, 28/32/64 px
  python scripts/benchmark.py --overrides data=fashion_mnist model.net.base_channels=128

Numbers are measured after warm-up steps, with the device drained around every timed block. The
JSON records device, versions, git SHA, the config overrides, each fast path's resolved value and
any fallback (a path this build cannot take is reported, never silently swapped).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from t2ilab.bench import baseline, common, evaluation, sampling, training

QUICK = {"overrides": ["experiment=quickstart"], "warmup": 3, "steps": 8, "gen_batch": 16, "feat_images": 16,
         "fid_n": 48, "captions": 256}
FULL = {"overrides": [], "warmup": 10, "steps": 40, "gen_batch": 64, "feat_images": 512, "fid_n": 10_000,
        "captions": 2048}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--out", default="bench.json", help="JSON report path")
    p.add_argument("--quick", action="store_true", help="small counts, quickstart config (< 2 min on 2 CPU cores)")
    p.add_argument("--overrides", nargs="*", default=None, help="train-config overrides (default: quickstart "
                   "with --quick, else the default config)")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                   help="measure the torch.compile variant (auto: not in --quick on CPU, where compiling takes minutes)")
    p.add_argument("--scaling", action="store_true", help="only diffusion training images/s vs batch size and resolution")
    p.add_argument("--inception-weights", help="torch-fidelity InceptionV3 .pth (default: random weights, same compute)")
    return p.parse_args()


def family_cfg(overrides: list[str], family: str, data: Any) -> Any:
    """The family's default model config on the benchmark's data."""
    from omegaconf import open_dict

    if family == "diffusion":
        return common.compose(overrides)
    cfg = common.compose([o for o in overrides if not o.startswith(("experiment=", "model"))] + [f"model={family}"])
    with open_dict(cfg):
        cfg.data = data
    return cfg


def variants(auto: dict[str, Any], device: torch.device, with_compile: bool) -> dict[str, tuple[dict, str | None]]:
    """name -> (perf options, precision override): auto, each switch flipped, and everything off."""
    base = "bf16-mixed" if device.type == "cuda" else "32-true"
    out: dict[str, tuple[dict, str | None]] = {"auto": ({}, base)}
    for key in ("channels_last", "data_on_device", "sync_free_guard"):
        out[f"{key}={not auto[key]}"] = ({key: not auto[key]}, base)
    if with_compile:
        out[f"compile={not auto['compile']}"] = ({"compile": not auto["compile"]}, base)
    for impl in ("fused", "foreach", "loop"):
        if impl != auto["optimizer_impl"]:
            out[f"optimizer_impl={impl}"] = ({"optimizer_impl": impl}, base)
    out["foreach_ema=False"] = ({"foreach_ema": False}, base)
    out["bf16-mixed" if base == "32-true" else "32-true"] = ({}, "bf16-mixed" if base == "32-true" else "32-true")
    out["all_off"] = ({"channels_last": False, "compile": False, "optimizer_impl": "loop", "foreach_ema": False,
                       "data_on_device": False, "sync_free_guard": False}, "32-true")
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from t2ilab.utils import fast_paths
    from t2ilab.utils.builders import build_datamodule, build_encoder, build_model

    device, notes = common.pick_device(args.device)
    k = QUICK if args.quick else FULL
    overrides = list(args.overrides if args.overrides is not None else k["overrides"]) + ["data.num_workers=0"]
    report: dict[str, Any] = {"env": common.environment(device), "mode": "quick" if args.quick else "full",
                              "overrides": overrides, "fallbacks": notes}
    cfg = common.compose(overrides)
    encoder = build_encoder(cfg.encoder, cfg)
    dm = build_datamodule(cfg.data, encoder)
    dm.setup("fit")
    auto, auto_notes = fast_paths.resolve(dict(cfg.perf), device)
    report["fast_paths_auto"], report["fallbacks"] = auto, notes + auto_notes
    if args.scaling:
        report["scaling"] = scaling(cfg, encoder, device, k)
        return report
    with_compile = args.compile == "on" or (args.compile == "auto" and not (args.quick and device.type == "cpu"))
    if not with_compile:
        report["fallbacks"].append("compile variant not measured (--compile off, or --quick on CPU)")
    runs: dict[str, Any] = {}
    for name, (perf, precision) in variants(auto, device, with_compile).items():
        logging.info("training: diffusion %s", name)
        runs[name] = training.measure_training(cfg, encoder, device, {**dict(cfg.perf), **perf}, precision,
                                               k["warmup"], k["steps"], dm)
        report["fallbacks"] += [f"{name}: {n}" for n in runs[name]["fallbacks"]]
    ref = runs["auto"]["images_per_second"]
    report["fast_paths"] = {n: {**r, "speed_vs_auto": r["images_per_second"] / ref} for n, r in runs.items()}
    report["training"] = {"diffusion": runs["auto"]}
    for family in ("gan", "vae"):
        logging.info("training: %s", family)
        fcfg = family_cfg(overrides, family, cfg.data)
        report["training"][family] = training.measure_training(fcfg, encoder, device, dict(cfg.perf),
                                                               runs["auto"]["precision"], k["warmup"], k["steps"], dm)
    model = build_model(cfg.model, encoder.dim).to(device)
    flops = training.diffusion_train_flops(model, int(cfg.data.batch_size), device)
    if flops:
        achieved = flops * ref / 1e12
        peak = common.peak_tflops(device)
        report["training"]["diffusion"].update(train_gflops_per_image=flops / 1e9, achieved_tflops=achieved,
                                               mfu=achieved / peak if peak else None)
    logging.info("baseline: diffusers UNet2DModel")
    params = int(runs["auto"]["params_m"] * 1e6)
    base = baseline.measure_baseline(cfg, dm, params, device, runs["auto"]["precision"] == "bf16-mixed",
                                     k["warmup"], k["steps"])
    report["baseline"] = {**base, "t2ilab_images_per_second": ref, "ratio": ref / base["images_per_second"]}
    report["sampling"] = sample_rates(cfg, overrides, model, encoder, dm, device, k["gen_batch"])
    tmp = Path(tempfile.mkdtemp(prefix="t2ilab-bench-"))
    weights = args.inception_weights or _random_inception(tmp)
    report["evaluation"] = evaluation.measure_features(device, weights, k["feat_images"], 64, tmp)
    report["fid"] = evaluation.measure_fid_wall(model, dm, device, weights, k["fid_n"], 64, tmp,
                                                num_steps=25 if device.type == "cpu" else 50)
    caps = [f"a photo of thing number {i}" for i in range(k["captions"])]
    report["text_encoding"] = sampling.measure_text_encoding(cfg.encoder, caps)
    return report


def _random_inception(tmp: Path) -> str:
    from t2ilab.evaluation.inception import make_random_weights

    return make_random_weights(tmp / "inception-random.pth")


def sample_rates(cfg: Any, overrides: list[str], model: Any, encoder: Any, dm: Any, device: torch.device,
                 batch: int) -> dict[str, Any]:
    from t2ilab.utils.builders import build_model

    table = dm.embedding_table()
    cond = table[torch.arange(batch) % len(table)]  # the first captions, cycled when there are fewer
    out: dict[str, Any] = {}
    for steps in (10, 25, 50):
        for g in (1.0, 2.0):
            out[f"diffusion_{steps}steps_guidance{g:g}"] = sampling.measure_generate(
                model, cond, device, num_steps=steps, guidance_scale=g)
    for family in ("gan", "vae"):
        fam = build_model(family_cfg(overrides, family, cfg.data).model, encoder.dim)
        out[family] = sampling.measure_generate(fam, cond, device, repeats=5)
    return out


def scaling(cfg: Any, encoder: Any, device: torch.device, k: dict) -> dict[str, Any]:
    """Diffusion training images/s over batch sizes (16..256) and resolutions (28/32/64 px)."""
    from omegaconf import open_dict

    from t2ilab.utils.builders import build_datamodule

    precision = "bf16-mixed" if device.type == "cuda" else "32-true"
    out: dict[str, Any] = {"batch_size": {}, "resolution": {}}
    for b in (16, 32, 64, 128, 256):
        with open_dict(cfg):
            cfg.data.batch_size = b
        out["batch_size"][b] = training.measure_training(cfg, encoder, device, dict(cfg.perf), precision,
                                                         k["warmup"], k["steps"])
    for res in (28, 32, 64):
        with open_dict(cfg):
            cfg.data.batch_size, cfg.data.image_size = 64, res
            # attention stays at the lowest level, as in the configs (32 px, 2x2 patches, 2 levels -> 8)
            levels = len(cfg.model.net.channel_mult) - 1
            cfg.model.net.attn_resolutions = [res // int(cfg.model.net.get("patch_size", 1)) // 2**levels]
        out["resolution"][res] = training.measure_training(cfg, encoder, device, dict(cfg.perf), precision,
                                                           k["warmup"], k["steps"], build_datamodule(cfg.data, encoder))
    return out


def table(report: dict[str, Any]) -> str:
    lines = [f"device: {report['env']['device']} ({report['mode']}, git {str(report['env']['git_sha'])[:8]})"]
    if report.get("fallbacks"):
        lines += [f"  fallback: {n}" for n in report["fallbacks"]]
    for fam, r in report.get("training", {}).items():
        lines.append(f"train {fam:<10} {r['images_per_second']:9.1f} img/s  peak {r['peak_memory_mb']:8.0f} MB  "
                     f"{r['params_m']:.2f} M params")
    for name, r in report.get("fast_paths", {}).items():
        lines.append(f"  fast path {name:<24} {r['images_per_second']:9.1f} img/s  x{r['speed_vs_auto']:.2f} vs auto")
    if "baseline" in report:
        b = report["baseline"]
        lines.append(f"baseline diffusers UNet2DModel {b['params_m']:.2f} M params: {b['images_per_second']:.1f} img/s"
                     f" -> t2ilab / baseline = {b['ratio']:.2f}x")
    for name, r in report.get("sampling", {}).items():
        lines.append(f"sample {name:<32} {r['images_per_second']:9.1f} img/s")
    if "evaluation" in report:
        e = report["evaluation"]
        lines.append(f"features: inception {e['inception']:.1f} img/s (channels_last {e['inception_channels_last']:.1f}),"
                     f" CLIP ViT-B/32 {e['clip_vit_b32']:.1f} img/s")
    if "fid" in report:
        f = report["fid"]
        lines.append(f"FID-{f['num_samples']} end to end {f['wall_seconds']:.1f} s (FID-10k ~{f['fid_10k_seconds_estimate']:.0f} s"
                     f"{', extrapolated' if f['extrapolated'] else ''}); reference cold {f['reference_seconds_cold']:.1f} s")
    if "text_encoding" in report:
        t = report["text_encoding"]
        lines.append(f"text encoding: {t['uncached_captions_per_second']:.0f} captions/s uncached, "
                     f"{t['cached_captions_per_second']:.0f} cached (x{t['cache_speedup']:.0f})")
    for kind, rows in report.get("scaling", {}).items():
        for key, r in rows.items():
            lines.append(f"scaling {kind}={key:<5} {r['images_per_second']:9.1f} img/s  peak {r['peak_memory_mb']:8.0f} MB")
    if "total_seconds" in report:
        lines.append(f"benchmark wall time {report['total_seconds']:.0f} s")
    return "\n".join(lines)


def main() -> None:
    args = parse()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    warnings.filterwarnings("ignore", module="hydra")
    t0 = time.perf_counter()
    report = run(args)
    report["total_seconds"] = time.perf_counter() - t0
    Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    print(table(report))
    print(f"report -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
