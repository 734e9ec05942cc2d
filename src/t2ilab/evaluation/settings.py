"""Typed evaluation settings: the ``metrics`` config group (conf/metrics/default.yaml mirrors these
defaults; a test keeps them in sync). Unknown keys are rejected, so a typo never silently
falls back to a default."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

INCEPTION_METRICS = ("fid", "kid", "isc", "prc")


def _clip_defaults() -> dict[str, Any]:
    return {"model_name": "ViT-B-32", "pretrained": "laion2b_s34b_b79k", "checkpoint_path": None,
            "random_init": False, "seed": 0, "model_cfg": None, "batch_size": 256}


def _classifier_defaults() -> dict[str, Any]:
    return {"epochs": 2, "max_train": 20000, "batch_size": 256, "lr": 3e-3, "width": 32, "seed": 0}


@dataclass
class MetricsSettings:
    """What to evaluate and how (see conf/metrics/default.yaml for the meaning of every field)."""

    num_samples: int = 1000
    batch_size: int = 64
    split: str = "val"
    num_reference: int | None = None
    seed: int = 0
    sampling: dict[str, Any] = field(default_factory=dict)
    fid: bool = True
    kid: bool = True
    isc: bool = True
    prc: bool = True
    clip_score: bool = True
    prompt_accuracy: bool = True
    classifier_fd: bool = True
    kid_subset_size: int = 1000
    kid_subsets: int = 100
    isc_splits: int = 10
    prc_k: int = 3
    inception_weights: str | None = None
    channels_last: bool = False
    skip_unavailable: bool = False
    save_samples: bool = False
    table_size: int = 32
    clip: dict[str, Any] = field(default_factory=_clip_defaults)
    classifier: dict[str, Any] = field(default_factory=_classifier_defaults)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | "MetricsSettings" | None = None,
                    **overrides: Any) -> "MetricsSettings":
        """Settings from a (Hydra/OmegaConf or plain) mapping plus keyword overrides.

        Args:
            cfg: the ``metrics`` config node, a plain dict, an existing MetricsSettings, or None (defaults).
            **overrides: individual fields to override (``clip``/``classifier`` dicts are merged).
        """
        if isinstance(cfg, MetricsSettings):
            cfg = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
        values = dict(_plain(cfg or {}))
        values.update(_plain(overrides))
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown metrics option(s) {unknown}; known: {sorted(known)}")
        for name, defaults in (("sampling", {}), ("clip", _clip_defaults()), ("classifier", _classifier_defaults())):
            values[name] = {**defaults, **(values.get(name) or {})}  # null in YAML = defaults
        s = cls(**values)
        if s.num_samples < 2 or s.batch_size < 1:
            raise ValueError(f"metrics.num_samples must be >= 2 and batch_size >= 1 "
                             f"(got {s.num_samples}, {s.batch_size})")
        return s

    @property
    def needs_inception(self) -> bool:
        """Whether any Inception-based metric is enabled."""
        return any(getattr(self, m) for m in INCEPTION_METRICS)


def _plain(obj: Any) -> Any:
    """OmegaConf containers -> plain Python (resolved)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(obj, (DictConfig, ListConfig)):
            return OmegaConf.to_container(obj, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    return obj
