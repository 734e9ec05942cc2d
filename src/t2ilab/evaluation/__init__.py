"""Evaluation: FID/KID/IS/precision-recall from one Inception pass, CLIP score, prompt accuracy
(docs/evaluation.md). Entry points: ``python -m t2ilab.eval`` and ``EvaluationCallback``.

Every name loads on first attribute access (``t2ilab.evaluation.settings`` is read by the config check,
which must not import torch).
"""

from __future__ import annotations

import importlib
from typing import Any


_LAZY = {
    "to_uint8": "t2ilab.evaluation.images",
    "SampleWriter": "t2ilab.evaluation.images",
    "Evaluator": "t2ilab.evaluation.engine",
    "EvaluationCallback": "t2ilab.evaluation.callback",
    "MetricsSettings": "t2ilab.evaluation.settings",
    "InceptionExtractor": "t2ilab.evaluation.inception",
    "ClipScorer": "t2ilab.evaluation.clip",
    "ReferenceClassifier": "t2ilab.evaluation.classifier",
    "ReferenceStats": "t2ilab.evaluation.reference",
    "RealImageReplay": "t2ilab.evaluation.replay",
    "report": "t2ilab.evaluation.results",
    "write_metrics_json": "t2ilab.evaluation.results",
}

__all__ = [*_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 't2ilab.evaluation' has no attribute {name!r}")
