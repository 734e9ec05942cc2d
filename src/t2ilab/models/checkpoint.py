"""Load any t2ilab checkpoint (any family) without knowing its class: the composed run config is
stored in the checkpoint (``checkpoint["t2ilab"]``) and the model is rebuilt from it."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from t2ilab.utils.builders import build_model
from t2ilab.utils.config import get_dotted

log = logging.getLogger(__name__)


def read_metadata(ckpt_path: str | os.PathLike, map_location: Any = "cpu") -> tuple[dict, dict]:
    """(checkpoint dict, its t2ilab metadata); clear errors for a missing or foreign file."""
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (ckpt_path=...; runs keep theirs in "
                                "<run_dir>/checkpoints/last.ckpt)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - pickle/zip/EOF errors vary with how the file is broken
        raise ValueError(f"checkpoint {path} could not be read ({type(e).__name__}: {str(e)[:200]}): it is truncated "
                         "(an interrupted copy or save?) or not a checkpoint at all; pass <run_dir>/checkpoints/"
                         "last.ckpt or a step=*.ckpt written by `python -m t2ilab.train`") from e
    meta = ckpt.get("t2ilab") if isinstance(ckpt, dict) else None
    if not meta or not meta.get("config"):
        raise ValueError(f"{path} is not a t2ilab checkpoint (no 't2ilab' metadata with the run config); "
                         "only checkpoints written by `python -m t2ilab.train` can be loaded")
    return ckpt, meta


def load_model(ckpt_path: str | os.PathLike, map_location: Any = "cpu") -> tuple[Any, DictConfig]:
    """Rebuild the model of a checkpoint with its weights (incl. EMA), in eval mode.

    Returns:
        (model, cfg): the LightningModule and the full composed training config.
    """
    ckpt, meta = read_metadata(ckpt_path, map_location)
    cfg = OmegaConf.create(meta["config"])
    model = build_model(cfg.model, meta["cond_dim"], meta.get("token_dim", 0))
    model.load_state_dict(ckpt["state_dict"])
    model.run_config = meta["config"]
    return model.eval(), cfg


# keys whose change makes a checkpoint's weights meaningless for the composed config
STRUCTURE_KEYS = ("model._target_", "model.net", "model.prediction", "model.parameterization", "model.schedule", "model.cond_type",
                  "model.max_tokens", "data.image_size", "data.channels", "data.condition_source",
                  "encoder._target_", "encoder.model_name", "encoder.pretrained", "encoder.model_cfg",
                  "encoder.model_name_or_path", "encoder.pooling", "prompt_expansion")
# what a checkpoint written before an option existed was trained with (new options default to the old behaviour)
OLD_DEFAULTS = {"model.cond_type": "pooled", "model.parameterization": "vp", "data.condition_source": "text", "prompt_expansion": {"kind": "none"}}


def _same(key: str, old: Any, new: Any, old_cfg: dict) -> bool:
    """Equal for the purpose of ``key``; options added after the checkpoint was written (absent in
    it, e.g. a new ``model.net`` key) are ignored, and ``model.max_tokens`` matters for tokens only."""
    if key == "model.max_tokens" and get_dotted(old_cfg, "model.cond_type") != "tokens":
        return True
    if key in OLD_DEFAULTS:  # either side may predate the option (sample/eval merge an old run's config)
        old = OLD_DEFAULTS[key] if old is None else old
        new = OLD_DEFAULTS[key] if new is None else new
    if isinstance(old, dict) and isinstance(new, dict):
        return all(_same(key, old[k], new.get(k), old_cfg) for k in old)
    return old == new


def check_overrides(ckpt_path: str | os.PathLike, train_cfg: DictConfig, entry: str, **groups: Any) -> None:
    """``sample``/``eval``: refuse encoder/data overrides that change what the checkpoint was trained
    on (another text encoder, image size or channels) before any work, naming the differing keys."""
    new = OmegaConf.merge(train_cfg, {k: OmegaConf.to_container(v, resolve=True) for k, v in groups.items()})
    try:
        check_compatible(ckpt_path, {"config": OmegaConf.to_container(train_cfg, resolve=True)}, new,
                         hint=f"drop these overrides of {entry} (the model only works with what it was trained on)")
    except ValueError as e:
        raise ValueError(str(e).replace("does not fit the composed config", f"does not fit the {entry} overrides")) from None


def check_compatible(ckpt_path: str | os.PathLike, meta: dict, cfg: DictConfig, hint: str | None = None) -> None:
    """Refuse, before any data or model work, to resume a checkpoint into a config whose family,
    network, image shape or text encoder differ; the message lists the differing keys and the
    original run's overrides (from its manifest.json, when present)."""
    old = meta.get("config") or {}
    new = OmegaConf.to_container(cfg, resolve=True)
    diffs = [(k, get_dotted(old, k), get_dotted(new, k)) for k in STRUCTURE_KEYS
             if not _same(k, get_dotted(old, k), get_dotted(new, k), old)]
    if not diffs:
        return
    lines = "\n".join(f"  {k}: checkpoint {a!r} != now {b!r}" for k, a, b in diffs)
    if hint is not None:
        raise ValueError(f"ckpt_path={ckpt_path} does not fit the composed config:\n{lines}\n{hint}")
    hint = "compose the same config as the original run"
    manifest = Path(ckpt_path).expanduser().resolve().parent.parent / "manifest.json"
    if manifest.is_file():
        try:
            overrides = json.loads(manifest.read_text()).get("overrides") or []
            hint += f": its overrides were {' '.join(overrides) or '(none)'}"
        except (OSError, ValueError):
            pass
    raise ValueError(f"ckpt_path={ckpt_path} does not fit the composed config:\n{lines}\n{hint} "
                     "(or drop the differing overrides)")


def checkpoint_info(ckpt_path: str | os.PathLike) -> dict[str, Any]:
    """Step, family, W&B run id and config hash of a checkpoint, read lazily (mmap: tensors are not loaded).

    Args:
        ckpt_path: the t2ilab checkpoint.
    """
    from t2ilab.tracking.artifacts import checkpoint_facts

    path = Path(ckpt_path).expanduser()
    info: dict[str, Any] = {"path": str(path.resolve())}
    try:
        info.update(checkpoint_facts(path))
    except Exception as e:  # noqa: BLE001 - informational only; load_model reports real problems
        log.warning("could not read checkpoint metadata of %s: %s", path, e)
    return info


def refuse_dead_model(ckpt_path: str | os.PathLike, model: Any) -> None:
    """A checkpoint whose weights (model or EMA) hold NaN/inf generates nothing but NaN: never sample or score
    it (a diverged trial must not "succeed" with a metric). Names the newest healthy checkpoint beside it."""
    from t2ilab.models.health import candidates, newest_healthy, unhealthy_reason

    reason = unhealthy_reason(model.state_dict(), limit=float("inf"))  # non-finite only: values are not judged
    if reason is None:
        return
    path = Path(ckpt_path).expanduser()
    healthy, _ = newest_healthy(p for p in candidates(None, path.parent) if p.resolve() != path.resolve())
    fix = (f"use a healthy checkpoint of the same run: ckpt_path={healthy}" if healthy is not None else
           "no healthy checkpoint lies beside it: retrain with a lower learning rate")
    raise ValueError(f"ckpt_path={ckpt_path} is a diverged model ({reason}): its samples would be NaN and its "
                     f"metrics meaningless; {fix}")


def eval_data_configs(cfg: DictConfig, train_cfg: DictConfig) -> tuple[DictConfig, DictConfig]:
    """(data, encoder) configs: the checkpoint's, with this machine's paths and the overrides.

    Args:
        cfg: the eval config (``paths``, ``data``, ``encoder``).
        train_cfg: the composed training config stored in the checkpoint (already resolved).
    """
    data = OmegaConf.create(OmegaConf.to_container(train_cfg.data, resolve=True))  # (sample has no data overrides)
    if "data_dir" in data:
        data.data_dir = cfg.paths.data_dir
    encoder = OmegaConf.merge(train_cfg.encoder, {"cache_dir": cfg.paths.cache_dir}, cfg.get("encoder") or {})
    return OmegaConf.merge(data, cfg.get("data") or {}), encoder


def load_checkpoint_run(cfg: DictConfig, entry: str) -> tuple[Any, DictConfig, DictConfig, DictConfig]:
    """(model on ``cfg.device``, its training config, data config, encoder config) for an entry point
    that works on a checkpoint (sample, eval, edit, roundtrip: one loading path); data/encoder overrides that change what the
    checkpoint was trained on are refused before any work."""
    from omegaconf import open_dict

    from t2ilab.models.generation import resolve_device
    from t2ilab.tracking.artifacts import resolve_checkpoint

    with open_dict(cfg):  # ckpt_path=wandb:<entity>/<project>/<name>:<alias> -> the downloaded checkpoint
        cfg.ckpt_path = resolve_checkpoint(str(cfg.ckpt_path), cfg.paths.cache_dir)
    model, train_cfg = load_model(cfg.ckpt_path, map_location="cpu")
    refuse_dead_model(cfg.ckpt_path, model)
    model.to(resolve_device(cfg.device))
    data_cfg, enc_cfg = eval_data_configs(cfg, train_cfg)
    check_overrides(cfg.ckpt_path, train_cfg, entry, data=data_cfg, encoder=enc_cfg)
    return model, train_cfg, data_cfg, enc_cfg
