"""Checkpoints as W&B model artifacts.

Logging: ``logger.wandb.log_model=last|best|all`` (off by default: checkpoints are large) — Lightning's
WandbLogger logs the run's checkpoints as ``model`` artifacts (``last``/``best``: the kept checkpoints when
training ends, aliases ``latest`` and, for the monitored best, ``best``; ``all``: each one as it is saved),
with the checkpoint callback's settings and score as metadata. Offline they are staged under the run dir
(``<run_dir>/wandb/data``, tracking/loggers.keep_wandb_files_in) and uploaded by ``wandb sync``.

Reading: ``ckpt_path=wandb:<entity>/<project>/<artifact>:<alias>`` in sample / eval / edit / roundtrip downloads
the artifact (online only) into ``<paths.cache_dir>/artifacts`` and loads the checkpoint inside it.
"""

from __future__ import annotations

import os
from pathlib import Path

PREFIX = "wandb:"
LOG_MODEL = {"false": False, "none": False, "null": False, "true": True, "last": True, "best": True, "all": "all"}


def log_model_mode(value: object) -> bool | str:
    """Lightning's ``log_model`` for our ``logger.wandb.log_model`` value; a clear error for anything else."""
    mode = LOG_MODEL.get(str(value).strip().lower())
    if mode is None:
        raise ValueError(f"logger.wandb.log_model={value!r}: use false (default), last or best (the kept checkpoints "
                         "when training ends, aliases latest / best) or all (every checkpoint as it is saved)")
    return mode


def is_artifact(ckpt_path: object) -> bool:
    return str(ckpt_path).startswith(PREFIX)


def resolve_checkpoint(ckpt_path: str, cache_dir: str | os.PathLike) -> str:
    """A local checkpoint file for ``ckpt_path``: itself, or the checkpoint inside the W&B model artifact it
    names (downloaded; needs W&B online)."""
    if not is_artifact(ckpt_path):
        return str(ckpt_path)
    from t2ilab.encoders.errors import WeightsUnavailableError

    ref = str(ckpt_path)[len(PREFIX):]
    if os.environ.get("WANDB_MODE", "offline").lower() in ("offline", "disabled", "dryrun"):
        raise WeightsUnavailableError(
            f"ckpt_path={ckpt_path} names a W&B model artifact, which needs W&B online (WANDB_MODE=online after "
            f"`wandb login`); offline, pass the checkpoint file itself (<run_dir>/checkpoints/last.ckpt)")
    import wandb

    artifact = wandb.Api().artifact(ref, type="model")
    root = Path(cache_dir).expanduser() / "artifacts" / artifact.name.replace(":", "_").replace("/", "_")
    files = sorted(Path(artifact.download(root=str(root))).glob("*.ckpt"))
    if not files:
        raise FileNotFoundError(f"W&B artifact {ref} holds no .ckpt file (downloaded to {root})")
    return str(files[0])
