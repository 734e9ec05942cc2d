"""Evaluation entry point: ``python -m t2ilab.eval ckpt_path=PATH [metrics.num_samples=N] ...``.

checkpoint -> model (EMA weights; any family: only ``generate`` is called) + its training config ->
the same encoder and datamodule (``data``/``encoder`` overrides merged in; cache/data dirs follow
this run's ``paths``) -> :class:`~t2ilab.evaluation.engine.Evaluator` (the engine the training
callback uses) -> ``metrics.json`` in the run dir, W&B run (summary, history, sample table; offline
unless WANDB_MODE says otherwise) or any other configured logger. Returns ``cfg.optimized_metric``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from t2ilab.utils.config import CONF_DIR

log = logging.getLogger("t2ilab.eval")


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate one checkpoint as described by a composed eval config (see conf/eval.yaml)."""
    from t2ilab.models.checkpoint import checkpoint_info, load_checkpoint_run
    import torch

    from t2ilab.models.generation import model_device
    from t2ilab.evaluation.engine import Evaluator
    from t2ilab.evaluation.results import report, write_metrics_json
    from t2ilab.tracking.manifest import build_manifest, write_manifest
    from t2ilab.tracking.artifacts import use_checkpoint
    from t2ilab.tracking.loggers import finish_wandb, wandb_identity
    from t2ilab.utils.builders import instantiate_group
    from t2ilab.utils.builders import build_datamodule, build_encoder
    from t2ilab.utils.config import show_and_save_config
    from t2ilab.evaluation.images import claim_sample_dir
    from t2ilab.utils.io import claim_run_out_dir
    from t2ilab.utils.schema import check_sampling, validate

    os.environ.setdefault("WANDB_MODE", "offline")
    validate(cfg)
    overwrite = bool(cfg.get("overwrite", False))  # out_dir: the one output-folder rule, checked before any work
    run_dir = OmegaConf.select(cfg, "paths.run_dir", throw_on_resolution_failure=False)
    out_dir = claim_run_out_dir(cfg.out_dir, overwrite, ("samples", "wandb"), run_dir=run_dir,
                                task_name=str(cfg.get("task_name") or "eval"))
    if cfg.metrics.get("save_samples"):
        claim_sample_dir(out_dir / "samples", overwrite, option="out_dir/samples")
    source = str(cfg.ckpt_path)  # (a wandb: reference is replaced by the downloaded file)
    model, train_cfg, data_cfg, enc_cfg = load_checkpoint_run(cfg, "eval")
    if cfg.metrics.get("sampling") is not None:
        check_sampling(OmegaConf.to_container(cfg.metrics.sampling, resolve=True), model, "metrics.sampling")
    device = model_device(model)
    datamodule = build_datamodule(data_cfg, build_encoder(enc_cfg, train_cfg))

    show_and_save_config(cfg, out_dir)
    config = {**OmegaConf.to_container(cfg, resolve=True), "train_data": OmegaConf.to_container(data_cfg),
              "checkpoint": checkpoint_info(cfg.ckpt_path)}
    manifest = build_manifest(config, cfg.metrics.seed)
    write_manifest(out_dir, manifest)
    torch.manual_seed(cfg.metrics.seed)  # generation uses explicit generators; this covers anything else

    evaluator = Evaluator(cfg.metrics, datamodule, cfg.paths.cache_dir)
    evaluator.prepare(device)  # missing weights fail here, before any sample is generated
    wandb_identity(cfg, cfg.paths.run_dir)  # name, group, W&B files under the run dir (as train)
    loggers = instantiate_group(cfg.logger)
    try:
        use_checkpoint(loggers, source, cfg.ckpt_path)  # lineage: this run reads that checkpoint
        for lg in loggers:
            lg.log_hyperparams({**config, "manifest": {k: v for k, v in manifest.items() if k != "config"}})
        sample_dir = str(out_dir / "samples") if evaluator.s.save_samples else None
        result = evaluator.evaluate(model, sample_dir=sample_dir)
        result["meta"]["checkpoint"] = config["checkpoint"]
        path = write_metrics_json(result, out_dir)
        report(result, loggers, step=config["checkpoint"].get("global_step"), evaluator=evaluator)
        for lg in loggers:
            lg.finalize("success")
    finally:
        finish_wandb(loggers)
    log.info("metrics -> %s", path)
    return result


def _job(cfg: DictConfig) -> float | None:
    from t2ilab.tracking.run_status import recorded

    with recorded(cfg.paths.run_dir):
        result = evaluate(cfg)
    value = result.get(cfg.optimized_metric) if cfg.optimized_metric else None
    return float(value) if isinstance(value, (int, float)) else None


@hydra.main(config_path=str(CONF_DIR), config_name="eval", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    from t2ilab.cli import run_job

    return run_job(_job, cfg)


def main() -> None:
    """Console entry point: Hydra parses the command line; a user error is one message and exit 2."""
    from t2ilab.cli import run

    run(_hydra_main)


if __name__ == "__main__":
    main()
