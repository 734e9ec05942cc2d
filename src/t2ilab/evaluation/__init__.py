"""Evaluation: FID/KID/IS/precision-recall from one Inception pass, CLIP score, prompt accuracy
(docs/evaluation.md). Entry points: ``python -m t2ilab.eval`` and ``EvaluationCallback``.

``to_uint8`` (the PNG quantisation every writer must use) is imported eagerly and cheaply; the
heavier pieces load on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any

from t2ilab.evaluation.images import SampleWriter, to_uint8

_LAZY = {
    "Evaluator": "t2ilab.evaluation.engine",
    "EvaluationCallback": "t2ilab.evaluation.callback",
    "MetricsSettings": "t2ilab.evaluation.settings",
    "InceptionExtractor": "t2ilab.evaluation.inception",
    "ClipScorer": "t2ilab.evaluation.clip",
    "ReferenceClassifier": "t2ilab.evaluation.classifier",
    "ReferenceStats": "t2ilab.evaluation.reference",
    "RealImageReplay": "t2ilab.evaluation.replay",
    "report": "t2ilab.evaluation.reporting",
    "write_metrics_json": "t2ilab.evaluation.reporting",
}

__all__ = ["to_uint8", "SampleWriter", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 't2ilab.evaluation' has no attribute {name!r}")
