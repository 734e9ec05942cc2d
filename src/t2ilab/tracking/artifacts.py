"""Checkpoints as W&B model artifacts, and which checkpoint a job read (lineage).

Logging: ``logger.wandb.log_model=last|best|all`` (off by default: checkpoints are large) logs the run's
checkpoints as ``model`` artifacts named ``model-<run id>`` (:class:`CheckpointArtifacts`, driven by the
Lightning logger in compat/lightning.py). When: ``all`` — and ``last``/``best`` under the default
``save_top_k=-1``, where every saved file is kept — each checkpoint as it is saved; ``last``/``best``
with a top-k callback, the kept checkpoints when training ends successfully. Aliases: ``latest``, ``best``
(the callback's best file; with no monitor, the newest) and ``step-N`` (the checkpoint's global step).
Metadata: Lightning's (``score``, ``original_filename``, the checkpoint callback's settings) plus ``step``,
``epoch``, ``config_hash`` (:func:`config_hash` of the run config stored in the checkpoint) and ``metrics``
(the last value of every scalar logged before the file was saved). Offline they are staged under the run
dir (``<run_dir>/wandb/data``, tracking/loggers.keep_wandb_files_in) and uploaded by ``wandb sync``.

Reading: ``ckpt_path=wandb:<entity>/<project>/<artifact>:<alias>`` (e.g. ``model-1a2b3c4d:step-2000``) in
sample / eval / edit / roundtrip downloads the artifact (online only) into ``<paths.cache_dir>/artifacts`` and
loads the checkpoint inside it. Lineage (:func:`use_checkpoint`): the W&B run of eval / edit / roundtrip
uses the artifact as its input, or, for a local checkpoint file, a ``checkpoint-<training run id>`` reference
artifact (``file://`` URI, nothing uploaded), so W&B's lineage graph shows train -> eval. Online runs only:
W&B keeps no inputs of an offline run (``wandb sync`` adds none). sample has no W&B run, so no lineage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable

log = logging.getLogger(__name__)
PREFIX = "wandb:"
LOG_MODEL = {"false": False, "none": False, "null": False, "true": True, "last": True, "best": True, "all": "all"}
# the checkpoint callback's settings stored with each artifact (as Lightning does; public attributes only)
CALLBACK_SETTINGS = ("monitor", "mode", "save_last", "save_top_k", "save_weights_only")


def log_model_mode(value: object) -> bool | str:
    """``True`` (``last``/``best``), ``"all"`` or ``False`` for our ``logger.wandb.log_model`` value (Lightning's
    ``log_model`` values); a clear error for anything else."""
    mode = LOG_MODEL.get(str(value).strip().lower())
    if mode is None:
        raise ValueError(f"logger.wandb.log_model={value!r}: use false (default), last or best (the kept checkpoints "
                         "when training ends, aliases latest / best / step-N) or all (every checkpoint as it is saved)")
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


def config_hash(config: Any) -> str | None:
    """The first 12 hex digits of the sha256 of a resolved run config (JSON with sorted keys): two checkpoints
    with the same hash were trained with the same config. None for no config."""
    if not config:
        return None
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def checkpoint_facts(ckpt_path: str | os.PathLike) -> dict[str, Any]:
    """``global_step``, ``epoch``, ``family``, ``train_wandb_id`` (the training run's W&B id) and ``config_hash``
    of a t2ilab checkpoint, read lazily (mmap: tensors are not loaded). Raises what ``torch.load`` raises."""
    import torch

    ckpt = torch.load(Path(ckpt_path).expanduser(), map_location="cpu", mmap=True, weights_only=False)
    meta = ckpt.get("t2ilab") or {}
    return {"global_step": ckpt.get("global_step"), "epoch": ckpt.get("epoch"), "family": meta.get("family"),
            "train_wandb_id": meta.get("wandb_id"), "config_hash": config_hash(meta.get("config"))}


def _facts_or_none(ckpt_path: str | os.PathLike) -> dict[str, Any]:
    try:
        return checkpoint_facts(ckpt_path)
    except Exception as e:  # noqa: BLE001 - metadata only: the artifact is still worth logging without it
        log.warning("could not read the step / config of checkpoint %s: %s", ckpt_path, e)
        return {}


def _scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


class CheckpointArtifacts:
    """Logs a ``ModelCheckpoint``'s files as W&B ``model`` artifacts with ``latest`` / ``best`` / ``step-N``
    aliases and step, score, metrics and config hash as metadata (the module docstring says when). The logger
    calls :meth:`note_metrics` with what it logs, :meth:`saved` after each save (rank zero) and
    :meth:`finished` when training ended successfully."""

    def __init__(self, mode: bool | str, name: str | None = None, policy: str = "mutable") -> None:
        self.mode, self.name, self.policy = mode, name, policy
        self.metrics: dict[str, float] = {}  # the last logged value of every scalar
        self._seen: dict[str, tuple[float, dict[str, float]]] = {}  # path -> (mtime, metrics when it was saved)
        self._logged: dict[str, float] = {}  # path -> mtime of the file version logged
        self._pending: dict[int, Any] = {}  # top-k callbacks whose kept files are logged when training ends

    def note_metrics(self, metrics: dict[str, Any]) -> None:
        self.metrics.update({k: v for k, v in metrics.items() if isinstance(v, (int, float))
                             and k != "trainer/global_step"})

    def saved(self, callback: Any, run: Callable[[], Any]) -> None:
        """After ``callback`` saved a checkpoint; ``run()`` is the W&B run (created on demand)."""
        if not self.mode:
            return
        for mtime, path, _ in self.kept(callback):
            if self._seen.get(path, (None,))[0] != mtime:
                self._seen[path] = (mtime, dict(self.metrics))
        if self.mode == "all" or getattr(callback, "save_top_k", None) == -1:
            self.log_new(callback, run())
        else:
            self._pending[id(callback)] = callback

    def finished(self, run: Callable[[], Any]) -> None:
        """Training ended successfully: log the kept files of the top-k callbacks."""
        for callback in self._pending.values():
            self.log_new(callback, run())
        self._pending.clear()

    @staticmethod
    def kept(callback: Any) -> list[tuple[float, str, Any]]:
        """(mtime, path, score) of the callback's kept files, oldest first: its last, best and top-k files."""
        scores = {getattr(callback, "last_model_path", ""): getattr(callback, "current_score", None),
                  getattr(callback, "best_model_path", ""): getattr(callback, "best_model_score", None),
                  **getattr(callback, "best_k_models", {})}
        return sorted((Path(p).stat().st_mtime, p, s) for p, s in scores.items() if p and Path(p).is_file())

    def log_new(self, callback: Any, run: Any) -> None:
        """Log the kept files not logged yet (or changed since: ``last.ckpt`` is rewritten)."""
        for mtime, path, score in self.kept(callback):
            if self._logged.get(path, -1.0) < mtime:
                self.log_one(run, callback, path, score)
                self._logged[path] = mtime

    def log_one(self, run: Any, callback: Any, path: str, score: Any) -> list[str]:
        """Log one checkpoint file; returns its aliases."""
        import wandb

        facts = _facts_or_none(path)
        step = facts.get("global_step")
        settings = {k: getattr(callback, k) for k in CALLBACK_SETTINGS if hasattr(callback, k)}
        metadata = {"score": _scalar(score), "original_filename": Path(path).name,
                    callback.__class__.__name__: settings,  # (__class__: the hook gets a weakref proxy)
                    "step": step, "epoch": facts.get("epoch"), "config_hash": facts.get("config_hash"),
                    "metrics": self._seen.get(path, (None, {}))[1]}
        self.name = self.name or f"model-{run.id}"
        artifact = wandb.Artifact(name=self.name, type="model", metadata=metadata)
        artifact.add_file(path, name="model.ckpt", policy=self.policy)
        aliases = ["latest", *(["best"] if path == getattr(callback, "best_model_path", None) else []),
                   *([f"step-{step}"] if step is not None else [])]
        run.log_artifact(artifact, aliases=aliases)
        return aliases


def use_checkpoint(loggers: Iterable[Any], source: str, ckpt_path: str | os.PathLike) -> str | None:
    """Lineage: the job's W&B run uses the checkpoint it read as an input artifact — the ``wandb:`` artifact
    ``source`` names, or for a local file a ``checkpoint-<training run id>`` reference artifact (a ``file://``
    URI with the file's checksum; nothing is uploaded; aliases ``step-N``). Returns the artifact used, or None:
    no W&B logger, or an offline / disabled run (W&B records no inputs for those)."""
    from lightning.pytorch.loggers import WandbLogger

    for lg in loggers:
        if not isinstance(lg, WandbLogger):
            continue
        run = lg.experiment
        if run.settings.mode in ("offline", "dryrun", "disabled"):
            log.info("W&B run is %s: %s is not recorded as its input (lineage needs an online run)",
                     run.settings.mode, source)
            return None
        if is_artifact(source):
            ref = str(source)[len(PREFIX):]
            run.use_artifact(ref, type="model")
            return ref
        import wandb

        path = Path(ckpt_path).expanduser().resolve()
        facts = _facts_or_none(path)
        step = facts.get("global_step")
        owner = facts.get("train_wandb_id") or hashlib.sha256(str(path).encode()).hexdigest()[:12]
        artifact = wandb.Artifact(f"checkpoint-{owner}", type="model", metadata={**facts, "path": str(path)})
        artifact.add_reference(path.as_uri(), name="model.ckpt")
        run.use_artifact(artifact, aliases=[f"step-{step}"] if step is not None else None)
        return artifact.name
    return None
