"""Bring-your-own data: a folder of images plus a captions file (jsonl or csv).

Every entry is validated once at setup (caption non-empty, file exists, PIL can open and decode it);
bad entries are excluded and reported (counts per reason + first paths) - never silently trained on.
Images are decoded, converted, centre-cropped and resized lazily in ``load_image``.
"""

from __future__ import annotations

import csv
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from t2ilab.data.base import CaptionedDataModule, CaptionedImageDataset
from t2ilab.utils.io import jsonl_rows

log = logging.getLogger(__name__)

REASONS = ("empty caption", "missing file", "unreadable image")


@dataclass(frozen=True)
class Entry:
    """One captions-file row: image path relative to image_dir, caption, 1-based line number."""

    file: str
    caption: str
    line: int


def read_captions_file(path: str | Path) -> list[Entry]:
    """Parse a ``.jsonl`` ({"file", "caption"} per line) or ``.csv`` (header with file,caption) file;
    a file that is not UTF-8 is a ValueError naming it and the byte (see ``_read_captions_file``)."""
    try:
        return _read_captions_file(path)
    except UnicodeDecodeError as e:
        raise ValueError(f"captions file {path} is not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 4]!r}); "
                         "re-save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8 captions.csv > fixed.csv`)") from e


def _read_captions_file(path: str | Path) -> list[Entry]:
    """Parse a ``.jsonl`` ({"file", "caption"} per line) or ``.csv`` (header with file,caption) file.

    Raises ValueError with the file name and line number on malformed content.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"captions file not found: {path}")
    ext = path.suffix.lower()
    entries: list[Entry] = []
    if ext == ".jsonl":
        with open(path, encoding="utf-8-sig") as f:
            for n, row, line in jsonl_rows(f, path):
                if not isinstance(row, dict) or "file" not in row or "caption" not in row:
                    raise ValueError(f'{path}:{n}: expected an object with "file" and "caption" keys, '
                                     f"got {line.strip()[:80]!r}")
                if not isinstance(row["file"], str) or not isinstance(row["caption"], (str, type(None))):
                    raise ValueError(f'{path}:{n}: "file" must be a string and "caption" a string')
                entries.append(Entry(row["file"], row["caption"] or "", n))
    elif ext == ".csv":
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            if "file" not in header or "caption" not in header:
                raise ValueError(f"{path}:1: csv header must contain 'file' and 'caption' columns, "
                                 f"got {header}")
            reader.fieldnames = header
            start = reader.line_num + 1
            try:
                for row in reader:
                    if None in row or row["file"] is None or row["caption"] is None:
                        raise ValueError(f"{path}:{reader.line_num}: expected {len(header)} columns "
                                         f"({','.join(header)}), got a row with a different count")
                    entries.append(Entry(row["file"].strip(), row["caption"], reader.line_num))
                    start = reader.line_num + 1
            except csv.Error as e:
                raise ValueError(f"{path}:{start}: malformed csv ({e})") from e
    else:
        raise ValueError(f"{path}: unsupported captions file type {ext!r}; use .jsonl or .csv")
    return entries


def _check_image(path: str) -> bool:
    try:
        with Image.open(path) as im:
            im.load()
        return True
    except Exception:  # noqa: BLE001 - any decode failure means "unreadable"
        return False


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")


def folder_entries(image_dir: Path) -> list[Entry]:
    """Every image file under ``image_dir`` (sorted, recursive), without captions: language-free
    training (``data.condition_source=image_embedding``) needs no captions file."""
    files = sorted(p.relative_to(image_dir).as_posix() for p in image_dir.rglob("*")
                   if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return [Entry(f, "", 0) for f in files]


def validate_entries(entries: list[Entry], image_dir: Path, source: Path,
                     max_threads: int = 8, need_captions: bool = True) -> list[Entry]:
    """Keep entries with a caption (when ``need_captions``) and a decodable image; warn with
    counts/paths for the rest.

    Raises ValueError (naming ``source`` and the reasons) if nothing valid remains.
    """
    bad: dict[str, list[str]] = {r: [] for r in REASONS}
    candidates: list[Entry] = []
    for e in entries:
        if need_captions and not e.caption.strip():
            bad["empty caption"].append(e.file)
        elif not (image_dir / e.file).is_file():
            bad["missing file"].append(e.file)
        else:
            candidates.append(e)
    threads = max(1, min(max_threads, os.cpu_count() or 1))
    with ThreadPoolExecutor(threads) as pool:  # PIL decoding releases the GIL
        ok = list(pool.map(_check_image, [str(image_dir / e.file) for e in candidates]))
    valid = [Entry(e.file, e.caption.strip(), e.line) for e, good in zip(candidates, ok) if good]
    bad["unreadable image"] = [e.file for e, good in zip(candidates, ok) if not good]
    summary = "; ".join(f"{r}: {len(v)} (e.g. {', '.join(v[:5])})" for r, v in bad.items() if v)
    if summary:
        log.warning("%s: excluded %d of %d entries - %s", source, len(entries) - len(valid),
                    len(entries), summary)
    if not valid:
        raise ValueError(f"{source}: no valid entries out of {len(entries)} (images under {image_dir})"
                         + (f" - {summary}" if summary else " - the file has no entries"))
    return valid


class CaptionFolderDataset(CaptionedImageDataset):
    """Validated entries; images loaded lazily.

    Args:
        entries: validated entries.
        image_dir: folder the entry paths are relative to.
        image_size: output side length.
        channels: 1 (L) or 3 (RGB).
    """

    def __init__(self, entries: list[Entry], image_dir: Path, image_size: int, channels: int):
        self.entries, self.image_dir = entries, image_dir
        self.image_size, self.channels = image_size, channels

    def __len__(self) -> int:
        return len(self.entries)

    def caption(self, i: int) -> str:
        return self.entries[i].caption

    def attributes(self, i: int) -> dict[str, Any]:
        return {"file": self.entries[i].file}

    def load_image(self, i: int) -> torch.Tensor:
        with Image.open(self.image_dir / self.entries[i].file) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                im = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                im.alpha_composite(rgba)  # transparent -> white
            im = im.convert("RGB" if self.channels == 3 else "L")
        # crop first, then resize: resizing with a crop box would let the filter see the cut-off sides
        w, h = im.size
        side = min(w, h)
        im = im.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
        if im.size != (self.image_size, self.image_size):
            im = im.resize((self.image_size, self.image_size), Image.Resampling.LANCZOS)
        arr = np.asarray(im, dtype=np.uint8)
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(arr))


class CaptionFolderDataModule(CaptionedDataModule):
    """User data: ``image_dir`` + ``captions_file`` (.jsonl or .csv with file,caption).

    Args:
        name: config group choice (ignored).
        image_dir: folder holding the images (entry paths are relative to it).
        captions_file: .jsonl ({"file","caption"} per line) or .csv (header file,caption); null =
            every image under ``image_dir``, uncaptioned (only with ``data.condition_source=image_embedding``).
        test_captions_file: optional separate captions file for the test split (default: test = val).
        val_fraction: fraction of valid entries held out for validation (>= 1 item when > 1 valid).
        seed: seed of the deterministic train/val split.
        image_size: output side length (centre-crop to square, then resize).
        channels: 1 (grayscale) or 3 (RGB).
        batch_size: per-device batch size.
        num_workers: DataLoader workers.
        pin_memory: DataLoader pin_memory.
        text_encoder: encoder providing ``encode_text`` (None -> batches without "cond").
    """

    def __init__(self, image_dir: str, captions_file: str | None, name: str = "",
                 test_captions_file: str | None = None, val_fraction: float = 0.05, seed: int = 0,
                 image_size: int = 64, channels: int = 3, batch_size: int = 64, num_workers: int = 0,
                 pin_memory: bool = False, text_encoder: Any = None, condition_source: str = "text"):
        super().__init__(image_size=image_size, channels=channels, batch_size=batch_size,
                         num_workers=num_workers, text_encoder=text_encoder, pin_memory=pin_memory,
                         condition_source=condition_source)
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.image_dir = Path(str(image_dir))
        self.captions_file = Path(str(captions_file)) if captions_file else None
        self.test_captions_file = Path(str(test_captions_file)) if test_captions_file else None
        self.val_fraction, self.seed = float(val_fraction), int(seed)
        self._split_entries: dict[str, list[Entry]] | None = None

    def _load(self, path: Path | None) -> list[Entry]:
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"image_dir not found: {self.image_dir}")
        if path is None:
            if self.condition_source != "image_embedding":
                raise ValueError("data.captions_file=null (an uncaptioned image folder) needs language-free training: "
                                 "set data.condition_source=image_embedding, or pass data.captions_file=PATH")
            return validate_entries(folder_entries(self.image_dir), self.image_dir, self.image_dir, need_captions=False)
        return validate_entries(read_captions_file(path), self.image_dir, path)

    def _splits(self) -> dict[str, list[Entry]]:
        if self._split_entries is None:
            valid = self._load(self.captions_file)
            n = len(valid)
            n_val = 0 if n < 2 else min(n - 1, max(1, round(self.val_fraction * n)))
            if n < 2:
                log.warning("%s: only 1 valid entry; val/test reuse the training item", self.captions_file)
            perm = np.random.default_rng(self.seed).permutation(n)
            val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
            train = [valid[i] for i in train_idx]
            val = [valid[i] for i in val_idx] or list(train)
            self._split_entries = {"train": train, "val": val}
            log.info("%s: %d valid entries -> train %d / val %d", self.captions_file or self.image_dir, n, len(train),
                     len(val))
        return self._split_entries

    def build_split(self, split: str) -> CaptionFolderDataset:
        if split == "test" and self.test_captions_file is not None:
            entries = self._load(self.test_captions_file)
        else:
            entries = self._splits()["val" if split == "test" else split]
        return CaptionFolderDataset(entries, self.image_dir, self.image_size, self.channels)
