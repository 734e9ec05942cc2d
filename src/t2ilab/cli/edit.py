"""Editing entry point: ``python -m t2ilab.edit ckpt_path=PATH inputs=DIR_or_FILE 'prompt=a blue square'
[source_prompt='a red square'] [strength=0.6] [out_dir=DIR] [overwrite=true] [seed=0] [sampling={...}]``.

Existing images are edited toward ``prompt`` with the checkpoint's own model (``model.edit``; what an
edit means per family is in editing/__init__.py): every input is read and checked first
(editing/inputs.py), then edited in batches, written beside a copy of its source with
``edits.jsonl``, a before/after grid and ``metrics.json`` (CLIP directional similarity, SSIM/PSNR,
target prompt accuracy: editing/metrics.py), and logged (W&B offline by default; ``logger=none``).
Image i uses seed ``seed + i`` (one generator per image), so batch size never changes a file.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from t2ilab.utils.config import CONF_DIR

log = logging.getLogger("t2ilab.edit")


def check_options(cfg: DictConfig) -> dict[str, Any]:
    """The edit options, validated before any work (errors name the option)."""
    from t2ilab.editing.families import check_strength

    prompt = cfg.prompt
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt={prompt!r} is empty: pass the edited caption, e.g. 'prompt=a blue square'")
    source = cfg.source_prompt
    if source is not None and (not isinstance(source, str) or not source.strip()):
        raise ValueError(f"source_prompt={source!r} is empty: give the source caption or leave it null "
                         "(then captions.jsonl in the input folder, else the model's null condition)")
    for key in ("overwrite", "skip_unreadable"):
        if not isinstance(cfg[key], bool):
            raise ValueError(f"{key}={cfg[key]!r} must be true or false")
    steps = cfg.inversion_steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"inversion_steps={steps!r} must be an integer >= 0 (GAN latent optimisation steps)")
    lr = cfg.inversion_lr
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"inversion_lr={lr!r} must be a number > 0 (Adam step size of the GAN inversion)")
    if not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
        raise ValueError(f"batch_size={cfg.batch_size!r} must be an integer >= 1")
    sampling = OmegaConf.to_container(cfg.sampling, resolve=True) if cfg.sampling is not None else {}
    if not isinstance(sampling, dict):
        raise ValueError(f"sampling={cfg.sampling!r} must be a mapping, e.g. 'sampling={{num_steps: 50}}'")
    return {"prompt": prompt.strip(), "source_prompt": source.strip() if source else None,
            "strength": check_strength(cfg.strength), "sampling": sampling}


def batches(items: list[Any], size: int) -> list[list[int]]:
    """Index batches; images with and without a source caption never share one (the model API takes
    one ``source_cond`` or None per call). Results do not depend on the batching."""
    groups = [[i for i, it in enumerate(items) if it.caption], [i for i, it in enumerate(items) if not it.caption]]
    return [g[k:k + size] for g in groups for k in range(0, len(g), size)]


def run_edits(model: Any, encoder: Any, images_u8: torch.Tensor, items: list[Any], opts: dict[str, Any],
              seed: int, batch_size: int, **family_options: Any) -> tuple[torch.Tensor, dict[str, list]]:
    """uint8 edits (N,C,H,W) of all inputs and the per-image diagnostics of ``edit_batch``."""
    import torch

    from t2ilab.editing.families import edit_batch
    from t2ilab.evaluation.images import to_uint8
    from t2ilab.evaluation.images import image_seed
    from t2ilab.models.generation import model_device

    dev, n = model_device(model), len(items)
    target = encoder.encode_text([opts["prompt"]]).float()
    sources = sorted({it.caption for it in items if it.caption})
    table = dict(zip(sources, encoder.encode_text(sources).float())) if sources else {}
    out, info = torch.zeros_like(images_u8), {}
    for idx in batches(items, batch_size):
        x = images_u8[idx].float().div(255).to(dev)
        src = torch.stack([table[items[i].caption] for i in idx]).to(dev) if items[idx[0]].caption else None
        gens = [torch.Generator().manual_seed(image_seed(seed, i)) for i in idx]
        edited, extra = edit_batch(model, x, target.expand(len(idx), -1).to(dev), strength=opts["strength"],
                                   generator=gens, source_cond=src, **opts["sampling"], **family_options)
        out[idx] = to_uint8(edited).cpu()
        for k, v in extra.items():
            info.setdefault(k, [None] * n)
            for j, i in enumerate(idx):
                info[k][i] = float(v[j])
    return out, info


def edit(cfg: DictConfig) -> dict[str, Any]:
    """Edit the inputs of a composed edit config (conf/edit.yaml); returns the metrics.json content."""
    from t2ilab.editing import families, inputs, writer
    from t2ilab.editing.metrics import EditScorer
    from t2ilab.models.checkpoint import checkpoint_info, load_checkpoint_run
    from t2ilab.evaluation.images import image_seed
    from t2ilab.models.generation import model_device, sampling_used
    from t2ilab.tracking.artifacts import use_checkpoint
    from t2ilab.tracking.loggers import finish_wandb, wandb_identity
    from t2ilab.utils.builders import build_datamodule, build_encoder, instantiate_group
    from t2ilab.utils.schema import validate

    os.environ.setdefault("WANDB_MODE", "offline")
    validate(cfg)
    opts = check_options(cfg)
    out_dir = writer.prepare_out_dir(cfg.out_dir, cfg.overwrite, cfg.inputs)  # before any work
    items, unreadable = inputs.collect_inputs(cfg.inputs, opts["source_prompt"], cfg.skip_unreadable)
    source = str(cfg.ckpt_path)  # (a wandb: reference is replaced by the downloaded file)
    model, train_cfg, data_cfg, enc_cfg = load_checkpoint_run(cfg, "edit")
    families.require_edit(model)
    device = model_device(model)
    encoder = build_encoder(enc_cfg, train_cfg)  # prompts conditioned exactly as in training
    scorer = EditScorer(cfg.metrics, cfg.paths.cache_dir, device, lambda: build_datamodule(data_cfg, encoder))
    scorer.prepare(opts["prompt"], cfg.target_label)  # missing metric weights fail here, before editing
    src_u8 = inputs.load_inputs(items, model.image_size, model.channels)
    wandb_identity(cfg, cfg.paths.run_dir)  # name, group, W&B files under the run dir (as train)
    loggers = instantiate_group(cfg.logger)
    try:
        use_checkpoint(loggers, source, cfg.ckpt_path)  # lineage: this run reads that checkpoint
        config = {**OmegaConf.to_container(cfg, resolve=True), "checkpoint": checkpoint_info(cfg.ckpt_path)}
        for lg in loggers:
            lg.log_hyperparams(config)
        family_options = {"inversion_steps": cfg.inversion_steps, "inversion_lr": cfg.inversion_lr}
        edit_u8, info = run_edits(model, encoder, src_u8, items, opts, cfg.seed, cfg.batch_size, **family_options)
        per, summary = scorer.score(src_u8, edit_u8, [it.caption for it in items], opts["prompt"],
                                    [it.label for it in items])
        per.update(info)
        summary.update({k: sum(x for x in v if x is not None) / max(1, sum(x is not None for x in v))
                        for k, v in info.items()})
        sampling = sampling_used(model, opts["sampling"])
        sampling.update({k: family_options[k] for k in families.FAMILY_OPTIONS.get(model.family, ())})
        rows = [{"file": f"{it.stem}_edit.png", "source": f"{it.stem}_src.png", "source_file": str(it.path.resolve()),
                 "index": i, "source_prompt": it.caption, "target_prompt": opts["prompt"],
                 "strength": opts["strength"], "seed": image_seed(cfg.seed, i), "sampling": sampling,
                 "notes": it.notes, **({"source_label": it.label} if it.label is not None else {}),
                 "metrics": {k: v[i] for k, v in per.items()}} for i, it in enumerate(items)]
        writer.write_pairs(out_dir, [it.stem for it in items], src_u8, edit_u8)
        writer.write_index(out_dir, rows)
        writer.write_edit_grid(out_dir, src_u8, edit_u8,
                               [writer.grid_caption(it.stem, it.caption, opts["prompt"]) for it in items])
        result = {**summary, "num_images": len(items), "num_unreadable_skipped": len(unreadable),
                  "skipped": scorer.skipped,
                  "meta": {"checkpoint": config["checkpoint"], "family": model.family,
                           "strength": opts["strength"], "prompt": opts["prompt"],
                           "source_prompt": opts["source_prompt"], "seed": cfg.seed, "sampling": sampling,
                           "unreadable": unreadable, **scorer.meta}}
        path = writer.write_metrics(out_dir, result)
        writer.report(loggers, result, rows, src_u8, edit_u8)
        for lg in loggers:
            lg.finalize("success")
    finally:
        finish_wandb(loggers)
    log.info("edited %d images -> %s (metrics %s): %s", len(items), out_dir, path,
             " ".join(f"{k}={v:.4g}" for k, v in summary.items() if isinstance(v, float)))
    return result


def _job(cfg: DictConfig) -> None:
    from t2ilab.tracking.run_status import recorded

    with recorded(cfg.paths.run_dir):
        edit(cfg)


@hydra.main(config_path=str(CONF_DIR), config_name="edit", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    from t2ilab.cli import run_job

    return run_job(_job, cfg)


def main() -> None:
    """Console entry point: Hydra parses the command line; a user error is one message and exit 2."""
    from t2ilab.cli import run

    run(_hydra_main)


if __name__ == "__main__":
    main()
