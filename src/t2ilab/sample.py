"""Sampling entry point: ``python -m t2ilab.sample ckpt_path=PATH 'prompts=[...]' out_dir=DIR``.

Writes one PNG per image, ``prompts.jsonl`` (file, prompt, seed, sampling options) and a
captioned ``grid.png``. Works for every family (it only calls ``generate``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import hydra
import torch
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
                  num_per_prompt: int = 4, seed: int = 0, batch_size: int = 64, **sampling: Any) -> Path:
    """Generate ``num_per_prompt`` images per prompt into ``out_dir`` (PNGs, prompts.jsonl, grid.png)."""
    from t2ilab.evaluation.images import save_png, to_uint8
    from t2ilab.models.generation import generate_images
    from t2ilab.tracking.grid import captioned_grid

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images, seeds = generate_images(model, cond, num_per_prompt, seed, batch_size, **sampling)
    used = {**getattr(model, "sampling_defaults", {}), **sampling}
    u8 = to_uint8(images)
    with open(out / "prompts.jsonl", "w") as f:
        for i, (img, s) in enumerate(zip(u8, seeds)):
            name = f"{i:05d}.png"
            save_png(img, out / name)
            f.write(json.dumps({"file": name, "prompt": prompts[i // num_per_prompt], "seed": s, **used}) + "\n")
    captioned_grid(images, list(prompts), num_per_prompt).save(out / "grid.png")
    log.info("wrote %d samples + grid.png to %s", len(seeds), out)
    return out


def sample(cfg: DictConfig) -> Path:
    from t2ilab.models.checkpoint import check_overrides, load_model
    from t2ilab.utils.builders import build_encoder
    from t2ilab.utils.io import ensure_writable_dir
    from t2ilab.utils.schema import validate

    validate(cfg)
    out_dir = ensure_writable_dir(cfg.out_dir, "out_dir")  # before any work
    prompts = read_prompts(cfg.prompts, cfg.prompts_file)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    model, train_cfg = load_model(cfg.ckpt_path, map_location="cpu")
    model.to(device)
    enc_cfg = train_cfg.encoder
    if cfg.encoder:
        enc_cfg = OmegaConf.merge(enc_cfg, cfg.encoder)
        check_overrides(cfg.ckpt_path, train_cfg, "sample", encoder=enc_cfg)
    encoder = build_encoder(enc_cfg)
    cond = encoder.encode_text(prompts).float()
    return write_samples(model, cond, prompts, out_dir, cfg.num_per_prompt, cfg.seed, cfg.batch_size,
                         **OmegaConf.to_container(cfg.sampling or OmegaConf.create({}), resolve=True))


@hydra.main(config_path=str(CONF_DIR), config_name="sample", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from t2ilab.tracking.run_status import recorded

    with recorded(cfg.paths.run_dir):
        sample(cfg)


if __name__ == "__main__":
    main()
