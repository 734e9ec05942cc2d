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


def write_samples(model: Any, cond: torch.Tensor, prompts: Sequence[str], out_dir: str | os.PathLike,
                  num_per_prompt: int = 4, seed: int = 0, batch_size: int = 64, *, grid: bool = True,
                  rank: int = 0, world_size: int = 1, postprocess: Any = None, **sampling: Any) -> Path:
    """Generate ``num_per_prompt`` images per prompt into ``out_dir`` (PNGs + prompts.jsonl) and a
    captioned grid BESIDE it (``<out_dir>_grid.png``); returns ``out_dir``.

    Image ``i`` (prompt ``i // num_per_prompt``) uses seed ``seed + i`` (models/generation.py), so
    batch size and sharding never change a file. With ``world_size > 1`` this rank writes only its
    shard ``rank::world_size``; rank 0 writes prompts.jsonl; the grid is left to the caller
    (``write_grid`` after a barrier) because no rank has all images.

    Args:
        model: object with ``generate``.
        cond: (P, D) prompt embeddings.
        prompts: the P prompts.
        out_dir: the sample folder.
        num_per_prompt: images per prompt.
        seed: base seed.
        batch_size: images per ``generate`` call.
        grid: write the captioned grid (single process only).
        rank: this process' rank.
        world_size: number of processes.
        postprocess: a ``postprocess.Chain`` (or its config) applied to the written PNGs and the
            grid, recorded as ``sampling.postprocess`` in prompts.jsonl; None/empty = none.
        **sampling: ``generate`` options over the model's defaults.
    """
    import torch

    from t2ilab.evaluation.images import SampleWriter
    from t2ilab.models.generation import iter_generate, sampling_used, shard_indices
    from t2ilab.postprocess import Chain, build_chain
    from t2ilab.tracking.grid import MAX_GRID_PROMPTS, grid_path_beside, write_grid

    if len(prompts) != cond.shape[0]:
        raise ValueError(f"{len(prompts)} prompts but {cond.shape[0]} embeddings")
    chain = postprocess if isinstance(postprocess, Chain) else build_chain(postprocess)
    writer = SampleWriter(out_dir)
    per_image = [p for p in prompts for _ in range(num_per_prompt)]
    mine = shard_indices(len(per_image), rank, world_size)
    rows = cond[torch.as_tensor([i // num_per_prompt for i in mine], dtype=torch.long)]
    keep = grid and world_size == 1
    shown = min(len(prompts), MAX_GRID_PROMPTS) * num_per_prompt
    grid_images = []
    for idx, x in iter_generate(model, rows, mine, seed, batch_size, **sampling):
        x = chain(x)  # exported pixels only; an empty chain returns x itself
        writer.write_images(x, idx)
        if keep and idx[0] < shown:
            grid_images.append(x[: shown - idx[0]].cpu())
    if rank == 0:
        info = sampling_used(model, sampling)
        if chain:
            info["postprocess"] = chain.describe()
        writer.write_index(per_image, seed, info)
    if keep:
        path = grid_path_beside(writer.dir)
        write_grid(torch.cat(grid_images), list(prompts)[:MAX_GRID_PROMPTS], num_per_prompt, path)
        log.info("wrote %d samples to %s, grid -> %s", len(mine), writer.dir, path)
    else:
        log.info("rank %d/%d: wrote %d samples to %s", rank, world_size, len(mine), writer.dir)
    return writer.dir


def sample(cfg: DictConfig) -> Path:
    import torch

    from t2ilab.models.checkpoint import check_overrides, load_model
    from t2ilab.postprocess import build_chain
    from t2ilab.utils.builders import build_encoder
    from t2ilab.utils.io import ensure_writable_dir
    from t2ilab.utils.schema import validate

    validate(cfg)
    if not isinstance(cfg.get("grid", True), bool):
        raise ValueError(f"grid={cfg.grid!r} must be true or false")
    out_dir = ensure_writable_dir(cfg.out_dir, "out_dir")  # before any work
    prompts = read_prompts(cfg.prompts, cfg.prompts_file)
    chain = build_chain(cfg.get("postprocess"))  # a bad step fails here, before any work
    guidance = cfg.get("clip_guidance") or {}
    if float(guidance.get("scale") or 0) < 0:
        raise ValueError(f"clip_guidance.scale={guidance.scale} must be >= 0 (0 = off)")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    model, train_cfg = load_model(cfg.ckpt_path, map_location="cpu")
    model.to(device)
    enc_cfg = train_cfg.encoder
    if cfg.encoder:
        enc_cfg = OmegaConf.merge(enc_cfg, cfg.encoder)
        check_overrides(cfg.ckpt_path, train_cfg, "sample", encoder=enc_cfg)
    encoder = build_encoder(enc_cfg, train_cfg)  # conditioned as in training (tokens, prompt expansion)
    cond = encoder.encode_text(prompts).float()
    sampling = OmegaConf.to_container(cfg.sampling or OmegaConf.create({}), resolve=True)
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
