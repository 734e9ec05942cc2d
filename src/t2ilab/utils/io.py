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


def read_text_file(path: str | os.PathLike, option: str) -> str:
    """A user-given text file as str (UTF-8, BOM allowed); a clear error naming the file, the byte
    offset and ``option`` when it is not UTF-8 (e.g. Latin-1 or UTF-16 exports)."""
    p = Path(path).expanduser()
    data = p.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{option}={p} is not UTF-8 text (byte {e.start}: {data[e.start:e.start + 4]!r}); "
                         f"re-save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8 {p.name} > fixed.txt`)") from e
