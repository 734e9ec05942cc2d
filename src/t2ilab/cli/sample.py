"""Sampling entry point: ``python -m t2ilab.sample ckpt_path=PATH 'prompts=[...]' out_dir=DIR``.

Writes one PNG per image (``000000.png``...) and ``prompts.jsonl`` (file, index, prompt, seed,
sampling) into ``out_dir`` — the same writer and generation function as ``t2ilab.eval``'s sample
export — and a captioned grid beside it (``<out_dir>_grid.png``). Works for every family (it only
calls ``generate``).

Two opt-in extras, both recorded in prompts.jsonl's ``sampling``: ``clip_guidance.scale > 0`` steers
generation toward the prompt with a CLIP model (src/t2ilab/guidance), and ``postprocess=...``
(conf/postprocess) post-processes the exported PNGs and grid only (src/t2ilab/postprocess.py; the
default ``none`` leaves every file byte-identical to ``t2ilab.eval``'s export).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import hydra
from omegaconf import DictConfig, OmegaConf

from t2ilab.utils.config import CONF_DIR
from t2ilab.utils.io import read_text_file

log = logging.getLogger("t2ilab.sample")


def read_prompts(prompts: Sequence[str] | None, prompts_file: str | None) -> list[str]:
    """Prompts from the list and/or file; clear errors for none or empty ones."""
    out = [str(p) for p in (prompts or [])]
    if prompts_file:
        path = Path(prompts_file).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"prompts_file={path} does not exist")
        out += [line.strip() for line in read_text_file(path, "prompts_file").splitlines() if line.strip()]
    if not out:
        raise ValueError("no prompts given: pass 'prompts=[\"a red circle\",\"a blue square\"]' or "
                         "prompts_file=FILE (one prompt per line)")
    empty = [i for i, p in enumerate(out) if not p.strip()]
    if empty:
        raise ValueError(f"prompts at positions {empty} are empty; remove them or write a caption")
    return out


def sample(cfg: DictConfig) -> Path:
    from t2ilab.models.checkpoint import load_checkpoint_run
    from t2ilab.models.generation import model_device, write_samples
    from t2ilab.postprocess import build_chain
    from t2ilab.evaluation.images import claim_sample_dir
    from t2ilab.utils.builders import build_encoder
    from t2ilab.utils.schema import check_sampling, validate

    validate(cfg)
    if not isinstance(cfg.get("grid", True), bool):
        raise ValueError(f"grid={cfg.grid!r} must be true or false")
    if not isinstance(cfg.get("overwrite", False), bool):
        raise ValueError(f"overwrite={cfg.overwrite!r} must be true or false")
    for key in ("num_per_prompt", "batch_size"):
        if int(cfg[key]) < 1:
            raise ValueError(f"{key}={cfg[key]} is out of range: must be >= 1")
    prompts = read_prompts(cfg.prompts, cfg.prompts_file)
    chain = build_chain(cfg.get("postprocess"))  # a bad step fails here, before any work
    guidance = cfg.get("clip_guidance") or {}
    if float(guidance.get("scale") or 0) < 0:
        raise ValueError(f"clip_guidance.scale={guidance.scale} must be >= 0 (0 = off)")
    out_dir = claim_sample_dir(cfg.out_dir, bool(cfg.get("overwrite", False)))  # after the checks; never a user's file
    model, train_cfg, _, enc_cfg = load_checkpoint_run(cfg, "sample")  # (the one loading path of every entry point)
    sampling = OmegaConf.to_container(cfg.sampling, resolve=True) if cfg.get("sampling") is not None else {}
    check_sampling(sampling, model)  # this family's types and ranges, before any encoding or sampling
    device = str(model_device(model))
    encoder = build_encoder(enc_cfg, train_cfg)  # conditioned as in training (tokens, prompt expansion)
    cond = encoder.encode_text(prompts).float()
    if float(guidance.get("scale") or 0) > 0:
        model, cond = clip_guided(model, guidance, prompts, cond, cfg.paths.cache_dir, device)
    return write_samples(model, cond, prompts, out_dir, cfg.num_per_prompt, cfg.seed, cfg.batch_size,
                         grid=bool(cfg.get("grid", True)), postprocess=chain, **sampling)


def clip_guided(model: Any, guidance: Any, prompts: Sequence[str], cond: torch.Tensor, cache_dir: str,
                device: str) -> tuple[Any, torch.Tensor]:
    """(guided model, packed rows) for ``clip_guidance`` (scale > 0): builds the guiding CLIP
    (``clip_guidance.model``, metrics.clip-style keys) and packs each prompt's CLIP text embedding
    into its conditioning row (guidance/guided.py explains why)."""
    from t2ilab.guidance import ClipGuidedModel, build_clip

    opts = {k: guidance[k] for k in ("normalize", "steps", "lr", "pull") if guidance.get(k) is not None}
    clip = build_clip(guidance.model, cache_dir, device)
    guided = ClipGuidedModel(model, clip, float(guidance.scale), **opts)
    log.info("CLIP guidance: scale %s with %r", guidance.scale, clip)
    return guided, guided.pack(cond, clip.encode_text(list(prompts)))


def _job(cfg: DictConfig) -> None:
    from t2ilab.tracking.run_status import recorded

    with recorded(cfg.paths.run_dir):
        sample(cfg)


@hydra.main(config_path=str(CONF_DIR), config_name="sample", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    from t2ilab.cli import run_job

    return run_job(_job, cfg)


def main() -> None:
    """Console entry point: Hydra parses the command line; a user error is one message and exit 2."""
    from t2ilab.cli import run

    run(_hydra_main)


if __name__ == "__main__":
    main()
