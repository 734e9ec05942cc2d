"""Filesystem checks done before any work starts (so a bad path never costs a training run)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def ensure_writable_dir(path: str | os.PathLike, option: str) -> Path:
    """Create ``path`` if needed and prove it is writable; otherwise a clear error naming ``option``."""
    p = Path(path).expanduser()
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p, prefix=".t2ilab-write-test-"):
            pass
    except OSError as e:
        raise PermissionError(f"{option}={p} is not a writable directory ({e.strerror or e}); "
                              f"choose another with {option}=/a/writable/dir") from e
    return p
