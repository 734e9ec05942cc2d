"""Filesystem checks done before any work starts (so a bad path never costs a training run)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Collection, IO, Any, Callable, Iterable, Iterator


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


def claim_out_dir(out_dir: str | os.PathLike, overwrite: bool, owned: Callable[[str], bool], *,
                  option: str = "out_dir", what: str = "an earlier run's files",
                  collides: Callable[[str], bool] | None = None, launched: Collection[str] = ()) -> Path:
    """The one rule for a tool's output folder (sample, edit): checked before any work; a folder holding files
    is refused unless ``overwrite``, which then removes only the files ``owned`` says the tool wrote and keeps
    every other file. ``collides``: names of files the tool would overwrite although it did not write them
    (refused even with ``overwrite``). ``launched``: names this launch itself already wrote there (Hydra's
    ``.hydra/`` and log file when out_dir is the run dir): neither counted nor removed. Nothing is removed when an
    error is raised."""
    p = Path(str(out_dir)).expanduser()
    existing = sorted(x.name for x in p.iterdir()
                      if not x.name.startswith(".t2ilab-write-test-") and x.name not in launched) if p.is_dir() else []
    if existing and not overwrite:
        raise FileExistsError(f"{option}={p} already holds {len(existing)} file(s) ({', '.join(existing[:4])}"
                              f"{', ...' if len(existing) > 4 else ''}); nothing was written. Choose another "
                              f"{option}, or pass overwrite=true to replace {what} (other files are kept)")
    p = ensure_writable_dir(p, option)
    theirs = [n for n in existing if collides is not None and collides(n) and not owned(n)]
    if theirs:
        raise FileExistsError(f"{option}={p} holds {len(theirs)} file(s) no t2ilab export listed "
                              f"({', '.join(theirs[:4])}{', ...' if len(theirs) > 4 else ''}): this run would "
                              f"overwrite them; nothing was written. Choose another {option}")
    removed = [p / n for n in existing if owned(n) and (p / n).is_file()]
    for x in removed:
        x.unlink()
    if removed:
        import logging

        logging.getLogger(__name__).info("overwrite=true: removed %d files of %s from %s (other files kept)",
                                         len(removed), what, p)
    return p


# what every t2ilab run writes into its out_dir besides the tool's own outputs
RUN_RECORD_FILES = ("manifest.json", "config_resolved.yaml", "config_tree.txt", "metrics.json", "COMPLETE", "FAILED",
                    "wandb_id")


def claim_run_out_dir(out_dir: str | os.PathLike, overwrite: bool, outputs: Collection[str], *,
                      run_dir: str | os.PathLike | None, task_name: str) -> Path:
    """``out_dir`` of eval / roundtrip by the one output-folder rule (:func:`claim_out_dir`): a folder holding
    files (another run's, a user's) is refused unless ``overwrite``, which then replaces only the run records and
    ``outputs`` the tool writes. When out_dir is this launch's own run dir (the default), what Hydra wrote there
    at start (``.hydra/``, ``<task>.log``) does not count."""
    p = Path(str(out_dir)).expanduser()
    same = run_dir is not None and p.resolve() == Path(str(run_dir)).expanduser().resolve()
    launched = {".hydra", f"{task_name}.log"} if same else set()
    owned = set(RUN_RECORD_FILES) | set(outputs)
    return claim_out_dir(p, overwrite, owned.__contains__, launched=launched,
                         what=f"an earlier {task_name}'s files ({', '.join(sorted(owned))})")


def atomic_write(path: str | os.PathLike, data: str | bytes | Callable[[IO[bytes]], Any], *,
                 encoding: str = "utf-8", fsync: bool = True) -> Path:
    """Write ``path`` completely or not at all: into a temp file in the same directory (flushed, fsync'ed),
    then ``os.replace`` over the target, so readers (other processes, a resumed run) and crashes (``kill -9``,
    full disk) never see or leave a partial file. ``data``: text, bytes, or ``fn(binary_file)`` that writes
    (e.g. ``lambda f: torch.save(obj, f)``). The one temp-file + rename writer of the project; an OSError
    says that nothing partial was left and the earlier file (if any) is intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode(encoding) if isinstance(data, str) else data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OSError(e.errno, f"could not write {path} ({e.strerror or e}); nothing partial was left behind "
                                   "and any earlier version of the file is intact") from e
        if isinstance(e, RuntimeError) and ("inline_container" in str(e) or "PytorchStreamWriter" in str(e)):
            # torch.save reports a failed write (a full disk, a quota) as an internal RuntimeError
            free = shutil.disk_usage(path.parent).free
            raise OSError(errno.EIO, f"could not write {path}: torch's file writer failed ({str(e)[:120]}); "
                                     f"{free / 2**20:.0f} MiB are free on {path.parent} — a full disk or quota is "
                                     "the usual cause. Nothing partial was left behind and any earlier version of "
                                     "the file is intact") from e
        raise
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` through :func:`atomic_write` (see models/atomic_io.py for checkpoints)."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def jsonl_rows(lines: Iterable[str], path: str | os.PathLike) -> Iterator[tuple[int, Any, str]]:
    """(1-based line number, parsed value, raw line) per non-blank JSON line; a line that is not JSON
    is a ValueError naming ``path:line``."""
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line), line
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: invalid JSON ({e.msg})") from e
