"""Round-trip entry point: ``python -m t2ilab.roundtrip ckpt_path=PATH inputs=DIR|split:val|samples``.

image -> caption (CLIP retrieval over a caption bank) -> image (the checkpoint's ``generate``), with
retrieval accuracy, input/regeneration CLIP similarity and reference-classifier agreement
(evaluation/roundtrip.py explains the measures; evaluation/caption_bank.py the banks). Writes into
``out_dir``: roundtrip.jsonl, metrics.json, roundtrip_grid.png, inputs/ and regenerated/ PNGs,
config + manifest; logs a W&B table (offline unless WANDB_MODE says otherwise) or nothing
(``logger=none``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from t2ilab.utils.config import CONF_DIR

log = logging.getLogger("t2ilab.roundtrip")
PREFIX = "roundtrip/"


def roundtrip(cfg: DictConfig) -> dict[str, Any]:
    """Run one round trip as described by a composed config (conf/roundtrip.yaml); returns metrics."""
    from t2ilab.models.checkpoint import checkpoint_info, load_checkpoint_run
    from t2ilab.evaluation import roundtrip as rt
    from t2ilab.evaluation.caption_bank import build_bank
    from t2ilab.evaluation.clip import ClipScorer
    from t2ilab.models.generation import model_device
    from t2ilab.evaluation.results import log_summary, scalar_metrics, write_metrics_json
    from t2ilab.tracking.artifacts import use_checkpoint
    from t2ilab.tracking.loggers import finish_wandb, wandb_identity
    from t2ilab.tracking.manifest import build_manifest, write_manifest
    from t2ilab.utils.builders import build_datamodule, build_encoder, instantiate_group
    from t2ilab.utils.config import show_and_save_config
    from t2ilab.utils.io import claim_run_out_dir
    from t2ilab.utils.schema import check_sampling, validate

    os.environ.setdefault("WANDB_MODE", "offline")
    validate(cfg)
    if cfg.num_inputs is not None and int(cfg.num_inputs) < 1:
        raise ValueError(f"num_inputs={cfg.num_inputs} must be >= 1 (or null = every image of a folder/split)")
    run_dir = OmegaConf.select(cfg, "paths.run_dir", throw_on_resolution_failure=False)
    out_dir = claim_run_out_dir(cfg.out_dir, bool(cfg.get("overwrite", False)), rt.OUTPUTS, run_dir=run_dir,
                                task_name=str(cfg.get("task_name") or "roundtrip"))  # the one output-folder rule
    source = str(cfg.ckpt_path)  # (a wandb: reference is replaced by the downloaded file)
    model, train_cfg, data_cfg, enc_cfg = load_checkpoint_run(cfg, "roundtrip")
    sampling = OmegaConf.to_container(cfg.sampling, resolve=True) if cfg.get("sampling") is not None else {}
    check_sampling(sampling, model)
    device = model_device(model)
    encoder = build_encoder(enc_cfg, train_cfg)  # conditioned as in training
    dm = build_datamodule(data_cfg, encoder)
    captions = OmegaConf.to_container(cfg.captions) if OmegaConf.is_list(cfg.captions) else cfg.captions
    bank = build_bank(captions, dm)  # an empty / missing bank fails here, before any model work

    show_and_save_config(cfg, out_dir)
    config = {**OmegaConf.to_container(cfg, resolve=True), "train_data": OmegaConf.to_container(data_cfg),
              "checkpoint": checkpoint_info(cfg.ckpt_path)}
    write_manifest(out_dir, build_manifest(config, cfg.seed))
    clip = ClipScorer(cfg.metrics.clip, cfg.paths.cache_dir, device,
                      required_for="the round trip's caption retrieval").encoder
    classifier, why = (rt.reference_classifier(dm, cfg.metrics, cfg.paths.cache_dir, device)
                       if cfg.classifier else (None, "classifier=false"))
    inputs = rt.load_inputs(cfg.inputs, model, encoder, dm, cfg.num_inputs, cfg.seed, cfg.batch_size, sampling,
                            cfg.metrics.split)
    log.info("round trip of %d inputs (%s) over %d captions (%s)", len(inputs.sources), cfg.inputs, len(bank),
             bank.source)
    records, regen, metrics = rt.run(model, encoder, inputs, bank, clip, classifier, cfg.regen_seed,
                                     cfg.batch_size, sampling)
    if why:
        metrics["skipped"]["classifier_agreement"] = why
    names = getattr(dm, "class_names", None)
    metrics["meta"] = {"inputs": str(cfg.inputs), "bank": bank.source, "clip": repr(clip),
                       "clip_fingerprint": clip.fingerprint, "clip_random_init": bool(clip.random_init),
                       "num_classes": len(names) if names else None, "checkpoint": config["checkpoint"],
                       "classifier_heldout_accuracy": getattr(classifier, "heldout_accuracy", None)}
    if names:
        metrics["retrieval_chance"] = 1.0 / len(names)
    paths = rt.write_outputs(out_dir, inputs, regen, records, cfg.grid_rows)
    path = write_metrics_json(metrics, out_dir)

    wandb_identity(cfg, cfg.paths.run_dir)  # name, group, W&B files under the run dir (as train)
    loggers = instantiate_group(cfg.logger)
    try:
        use_checkpoint(loggers, source, cfg.ckpt_path)  # lineage: this run reads that checkpoint
        for lg in loggers:
            lg.log_hyperparams(config)
        for wb in log_summary(metrics, loggers, PREFIX):
            if cfg.table_size:
                wb.log({PREFIX + "table": rt.wandb_table(records, inputs, regen, names, int(cfg.table_size))})
        for lg in loggers:
            lg.finalize("success")
    finally:
        finish_wandb(loggers)
    log.info("round trip: %s -> %s, %s, grid %s", " ".join(f"{k}={v:.4g}" for k, v in scalar_metrics(metrics).items()),
             path, paths["jsonl"], paths["grid"])
    return metrics


def _job(cfg: DictConfig) -> float | None:
    from t2ilab.tracking.run_status import recorded

    with recorded(cfg.paths.run_dir):
        metrics = roundtrip(cfg)
    value = metrics.get("image_clip_similarity")
    return float(value) if isinstance(value, (int, float)) else None


@hydra.main(config_path=str(CONF_DIR), config_name="roundtrip", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    from t2ilab.cli import run_job

    return run_job(_job, cfg)


def main() -> None:
    """Console entry point: Hydra parses the command line; a user error is one message and exit 2."""
    from t2ilab.cli import run

    run(_hydra_main)


if __name__ == "__main__":
    main()
