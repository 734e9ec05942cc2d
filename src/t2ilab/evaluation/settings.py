"""Typed evaluation settings: the ``metrics`` config group. conf/metrics/default.yaml is the one
source of the defaults (and documents every field); this dataclass is its schema: field types are
checked (utils/schema.py) and unknown keys rejected, so a typo never silently falls back to a
default."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

INCEPTION_METRICS = ("fid", "kid", "isc", "prc")


@functools.lru_cache(maxsize=1)
def yaml_defaults() -> dict[str, Any]:
    """The defaults of conf/metrics/default.yaml as a plain dict."""
    from omegaconf import OmegaConf

    from t2ilab.utils.config import CONF_DIR

    return OmegaConf.to_container(OmegaConf.load(CONF_DIR / "metrics" / "default.yaml"), resolve=True)


@dataclass
class MetricsSettings:
    """What to evaluate and how (see conf/metrics/default.yaml for the meaning and default of every field)."""

    num_samples: int
    batch_size: int
    split: str
    num_reference: int | None
    seed: int
    sampling: dict[str, Any] | None
    fid: bool
    kid: bool
    isc: bool
    prc: bool
    clip_score: bool
    prompt_accuracy: bool
    classifier_fd: bool
    kid_subset_size: int
    kid_subsets: int
    isc_splits: int
    prc_k: int
    inception_weights: str | None
    channels_last: bool
    skip_unavailable: bool
    save_samples: bool
    table_size: int
    clip: dict[str, Any]
    classifier: dict[str, Any]
    postprocess: list[dict[str, Any]] | None = None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | "MetricsSettings" | None = None,
                    **overrides: Any) -> "MetricsSettings":
        """Settings from a (Hydra/OmegaConf or plain) mapping plus keyword overrides.

        Args:
            cfg: the ``metrics`` config node, a plain dict, an existing MetricsSettings, or None (defaults).
            **overrides: individual fields to override (``clip``/``classifier`` dicts are merged).
        """
        from t2ilab.utils.typecheck import check_node

        if isinstance(cfg, MetricsSettings):
            cfg = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
        values = dict(_plain(cfg or {}))
        values.update(_plain(overrides))
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown metrics option(s) {unknown}; known: {sorted(known)}")
        defaults = yaml_defaults()
        for name in ("sampling", "clip", "classifier"):  # nested: merged over the defaults (null = defaults)
            values[name] = {**(defaults[name] or {}), **(values.get(name) or {})}
        values = {**defaults, **values}
        errors: list[str] = []
        check_node(values, cls, "metrics.", errors)
        if errors:
            raise ValueError("wrong metrics value(s):\n" + "\n".join(errors))
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
