"""Exceptions shared by the frozen encoders (CLIP text/image towers, Inception for FID, ...)."""

from __future__ import annotations


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be obtained: no network / offline mode and not in the local
    cache, or a local weights file that does not exist. The message always says which model and
    which option takes a local file instead; the underlying error is chained as ``__cause__``.
    """
