#!/usr/bin/env python
"""Sampler x step-count x guidance sweep of one diffusion checkpoint with ``t2ilab.eval``'s Evaluator.

  python scripts/sampler_sweep.py CKPT --samplers ddim dpm_solver++ euler ddpm --steps 10 25 50 \\
      --num-samples 1000 --out sweep.json
  python scripts/sampler_sweep.py CKPT --guidance-scale 3 --eta 0 -o metrics.batch_size=128 paths.cache_dir=/scratch/c
  python scripts/sampler_sweep.py CKPT --samplers ddim --steps 25 --guidance-scale 2 3 4 \\
      --guidance-interval none 0.3,5 1,inf                     # limited-interval guidance (sigma ranges)
  python scripts/sampler_sweep.py CKPT --guide cfg autoguidance --guide-ckpt RUN/checkpoints/step=0001000.ckpt

Every (sampler, steps) pair generates the same N prompts and seeds (``metrics.seed``) and is scored with
the classifier-based metrics only (prompt accuracy, classifier Frechet distance: in-domain, offline;
FID/KID/IS/PR and the CLIP score are switched off). The model, data and reference classifier are
loaded once. Prints a table of prompt_accuracy / classifier_fd / generation seconds and writes all
results to ``--out`` (JSON). Seconds are the evaluator's ``generate`` stage (sampling only; CUDA
synchronised), after one warm-up batch.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

OFF = ("fid", "kid", "isc", "prc", "clip_score")  # Inception / CLIP metrics: need downloaded weights
COLUMNS = ("prompt_accuracy", "prompt_accuracy_worst", "classifier_fd", "seconds")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    from t2ilab.models.samplers import SAMPLERS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ckpt", help="a diffusion / latent-diffusion t2ilab checkpoint")
    p.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS))
    p.add_argument("--steps", nargs="+", type=int, default=[10, 25, 50])
    p.add_argument("--num-samples", type=int, default=1000, help="metrics.num_samples")
    p.add_argument("--batch-size", type=int, default=64, help="metrics.batch_size")
    p.add_argument("--seed", type=int, default=0, help="metrics.seed")
    p.add_argument("--guidance-scale", type=float, nargs="+", default=[None], help="default: the checkpoint's")
    p.add_argument("--guidance-interval", nargs="+", default=["default"],
                   help="sigma ranges 'lo,hi' (inf allowed), 'none' = every step, 'default' = the checkpoint's")
    p.add_argument("--guide", nargs="+", default=["cfg"], choices=["cfg", "autoguidance"],
                   help="the weak branch: the null caption (cfg) or --guide-ckpt's model (autoguidance)")
    p.add_argument("--guide-ckpt", default=None, help="autoguidance's weaker model (e.g. an earlier checkpoint)")
    p.add_argument("--eta", type=float, default=None, help="default: the checkpoint's")
    p.add_argument("--device", default="auto")
    p.add_argument("-o", "--overrides", nargs="*", default=[],
                   help="more conf/eval.yaml overrides (metrics.*, paths.*, data.*, encoder.*)")
    p.add_argument("--out", default="sampler_sweep.json")
    args = p.parse_args(argv)
    if any(s < 1 for s in args.steps):
        p.error("--steps must be >= 1")
    if "autoguidance" in args.guide and not args.guide_ckpt:
        p.error("--guide autoguidance needs --guide-ckpt (an earlier checkpoint of the run)")
    from t2ilab.models.options import interval_problem

    for text in args.guidance_interval:
        if text not in ("default", "none") and interval_problem(_interval(text)) is not None:
            p.error(f"--guidance-interval {text!r}: give lo,hi with 0 <= lo <= hi (e.g. 0.3,5 or 1,inf), none or default")
    return args


def _interval(text: str) -> Any:
    """'lo,hi' -> [lo, hi]; 'none' -> None (every step); anything unparsable is returned as is."""
    if text == "none":
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        return text


def compose_eval_config(args: argparse.Namespace, run_dir: str) -> Any:
    """conf/eval.yaml for ``args.ckpt`` with the classifier-only metrics and the overrides."""
    from hydra import compose, initialize_config_dir

    from t2ilab.utils.config import CONF_DIR
    from t2ilab.utils.schema import validate

    overrides = [f"ckpt_path={Path(args.ckpt).expanduser().resolve()}", f"paths.run_dir={run_dir}", "logger=none",
                 f"device={args.device}", f"metrics.num_samples={args.num_samples}",
                 f"metrics.batch_size={args.batch_size}", f"metrics.seed={args.seed}",
                 "metrics.prompt_accuracy=true", "metrics.classifier_fd=true", *[f"metrics.{m}=false" for m in OFF],
                 *args.overrides]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=overrides)
    validate(cfg)
    return cfg


def load(cfg: Any) -> tuple[Any, Any, str]:
    """(model on its device, datamodule, device) as ``t2ilab.eval.evaluate`` builds them."""
    import torch

    from t2ilab.models.checkpoint import eval_data_configs
    from t2ilab.models.checkpoint import check_overrides, load_model
    from t2ilab.utils.builders import build_datamodule, build_encoder

    model, train_cfg = load_model(cfg.ckpt_path, map_location="cpu")
    if not hasattr(model, "guided_by") or "sampler" not in getattr(model, "sampling_keys", ()):
        raise SystemExit(f"{cfg.ckpt_path} is a {getattr(model, 'family', '?')} checkpoint: the sweep needs a "
                         "diffusion or latent_diffusion model (sampling.sampler)")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    model.to(device).eval()
    data_cfg, enc_cfg = eval_data_configs(cfg, train_cfg)
    check_overrides(cfg.ckpt_path, train_cfg, "eval", data=data_cfg, encoder=enc_cfg)
    return model, build_datamodule(data_cfg, build_encoder(enc_cfg, train_cfg)), device


def sweep(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from omegaconf import OmegaConf

    from t2ilab.evaluation.engine import Evaluator
    from t2ilab.tracking.objective import CLASS_PREFIX

    cfg = compose_eval_config(args, ".")  # nothing is written to the run dir
    model, dm, device = load(cfg)
    torch.manual_seed(cfg.metrics.seed)  # as t2ilab.eval (generation itself uses per-image generators)
    metrics = OmegaConf.to_container(cfg.metrics, resolve=True)
    base = {**dict(metrics.get("sampling") or {}), **({} if args.eta is None else {"eta": args.eta})}
    # warm-up (CUDA kernels, cuDNN autotuning): not timed
    model.generate(dm.encode(["warm-up"]).to(device).expand(min(args.batch_size, 4), -1),
                   **{**base, "sampler": args.samplers[0], "num_steps": 2})
    rows = []
    guidance = [({} if w is None else {"guidance_scale": w})
                | ({} if text == "default" else {"guidance_interval": _interval(text)})
                | {"guide": guide, "guide_ckpt": args.guide_ckpt if guide == "autoguidance" else None}
                for guide in args.guide for w in args.guidance_scale for text in args.guidance_interval]
    for name, steps, extra in ((n, s, g) for n in args.samplers for s in args.steps for g in guidance):
        sampling = {**base, "sampler": name, "num_steps": steps, **extra}
        ev = Evaluator({**metrics, "sampling": sampling}, dm, cfg.paths.cache_dir)
        ev.prepare(device)  # the reference classifier: trained once, then from the cache
        t0 = time.perf_counter()
        result = ev.evaluate(model)
        wall = time.perf_counter() - t0
        meta = result["meta"]
        used = meta["sampling"]
        row = {"sampler": name, "num_steps": steps, "guide": used.get("guide"),
               "guidance_scale": used.get("guidance_scale"),
               "guidance_interval": used.get("guidance_interval"),
               "prompt_accuracy": result.get("prompt_accuracy"),
               "prompt_accuracy_worst": result.get("prompt_accuracy_worst"),
               "class_accuracy": {k[len(CLASS_PREFIX):]: v for k, v in result.items() if k.startswith(CLASS_PREFIX)},
               "confusions": result.get("confusions"),
               "classifier_fd": result.get("classifier_fd"), "seconds": meta["stage_seconds"]["generate"],
               "wall_seconds": wall, "generate_images_per_second": meta["generate_images_per_second"],
               "nonfinite_fraction": result.get("nonfinite_fraction"), "sampling": meta["sampling"]}
        rows.append(row)
        logging.info("%s", {k: row[k] for k in ("sampler", "num_steps", "guidance_scale", "guidance_interval",
                                                *COLUMNS)})
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return {"ckpt": str(cfg.ckpt_path), "device": device, "num_samples": args.num_samples, "seed": args.seed,
            "metrics": {k: v for k, v in metrics.items() if k != "sampling"}, "args": vars(args), "rows": rows}


def table(rows: list[dict[str, Any]]) -> str:
    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    head = ("sampler", "steps", "guide", "w", "interval", *COLUMNS)
    body = [(r["sampler"], r["num_steps"], r["guide"], r["guidance_scale"], str(r["guidance_interval"]),
             *(r[c] for c in COLUMNS)) for r in rows]
    cells = [head, *[tuple(fmt(v) for v in line) for line in body]]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i < 5 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
             for line in cells]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("WANDB_MODE", "offline")
    report = sweep(args)
    Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    print(table(report["rows"]))
    print(f"report -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
