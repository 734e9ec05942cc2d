"""Input images of ``t2ilab.edit``: a file or a folder (non-recursive, sorted), optional per-image
source captions / labels from ``<folder>/captions.jsonl``.

Every file is opened and decoded BEFORE the model is loaded, so a bad input costs nothing: an
unreadable file is an error naming it (``skip_unreadable=true``: skipped with a logged note, counted
in metrics.json). Images of another size or mode are converted exactly as training data is
(data/captions.py: EXIF rotation, transparency on white, RGB/L conversion, centre crop to a square,
antialiased Lanczos resize), and every such change is noted per image (logged and in edits.jsonl).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps

log = logging.getLogger(__name__)

INPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CAPTIONS_FILE = "captions.jsonl"


@dataclass
class EditInput:
    """One input image: its file, its source caption (None = none) and label (int index or class
    name, None = unknown), what reading it found (``size``, ``mode``) and the conversion notes."""

    path: Path
    caption: str | None = None
    label: int | str | None = None
    size: tuple[int, int] = (0, 0)
    mode: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def stem(self) -> str:
        return self.path.stem


def list_inputs(inputs: str | os.PathLike) -> list[Path]:
    """The image files of ``inputs`` (a file, or a folder's images sorted by name)."""
    p = Path(str(inputs)).expanduser()
    if p.is_file():
        if p.suffix.lower() not in INPUT_SUFFIXES:
            raise ValueError(f"inputs={p} is not an image file (expected {'/'.join(INPUT_SUFFIXES)})")
        return [p]
    if not p.is_dir():
        raise FileNotFoundError(f"inputs={p} does not exist (pass an image file or a folder of images)")
    files = sorted(f for f in p.iterdir() if f.suffix.lower() in INPUT_SUFFIXES and f.is_file())
    if not files:
        raise FileNotFoundError(f"inputs={p} holds no {'/'.join(INPUT_SUFFIXES)} images")
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:  # outputs are named <stem>_edit.png: two inputs would write one file
            raise ValueError(f"inputs={p}: {stems[f.stem].name} and {f.name} have the same name stem; outputs are "
                             "named <stem>_edit.png, so rename one of them")
        stems[f.stem] = f
    return files


def read_captions(path: Path) -> dict[str, dict[str, Any]]:
    """``captions.jsonl`` rows ``{"file", "caption"?, "label"?}`` by file name; errors name file:line."""
    rows: dict[str, dict[str, Any]] = {}
    from t2ilab.utils.io import jsonl_rows, read_text_file

    for n, row, line in jsonl_rows(read_text_file(path, f"inputs {CAPTIONS_FILE}").splitlines(), path):
        if not isinstance(row, dict) or not isinstance(row.get("file"), str):
            raise ValueError(f'{path}:{n}: expected an object with a "file" string (and "caption", "label"), '
                             f"got {line.strip()[:80]!r}")
        if not isinstance(row.get("caption"), (str, type(None))):
            raise ValueError(f'{path}:{n}: "caption" must be a string')
        label = row.get("label")
        if label is not None and (isinstance(label, bool) or not isinstance(label, (int, str))):
            raise ValueError(f'{path}:{n}: "label" must be a class index or a class name, got {label!r}')
        rows[Path(row["file"]).name] = {"caption": (row.get("caption") or "").strip() or None, "label": label}
    return rows


def probe(path: Path) -> tuple[tuple[int, int], str] | str:
    """((width, height), mode) after EXIF rotation, or the reason the file cannot be decoded."""
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            transparent = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
            return im.size, im.mode + ("+alpha" if transparent and "A" not in im.mode else "")
    except Exception as e:  # noqa: BLE001 - any decode failure means "unreadable"
        return f"{type(e).__name__}: {str(e)[:160]}"


def conversion_notes(size: tuple[int, int], mode: str, image_size: int, channels: int) -> list[str]:
    """What reading changes about an image of ``size``/``mode`` for a model of ``image_size``/``channels``."""
    notes, (w, h) = [], size
    if w != h:
        notes.append(f"centre-cropped {w}x{h} to {min(w, h)}x{min(w, h)}")
    if min(w, h) != image_size:
        notes.append(f"resized {min(w, h)}px -> {image_size}px (antialiased Lanczos)")
    want, base = "RGB" if channels == 3 else "L", mode.split("+")[0]
    if base in ("RGBA", "LA", "PA") or mode.endswith("+alpha"):
        notes.append("transparent pixels composited on white")
    if base != want:
        notes.append(f"converted {base} -> {want}" + (" (luminance)" if want == "L" else ""))
    return notes


def collect_inputs(inputs: str | os.PathLike, source_prompt: str | None = None,
                   skip_unreadable: bool = False) -> tuple[list[EditInput], list[str]]:
    """Validated inputs (decoded once) with their captions/labels, and the skipped files.

    Captions: ``source_prompt`` (one for all; a captions.jsonl is then ignored, with a note) else the
    folder's captions.jsonl per file, else none (the model's null condition is the source).
    """
    files = list_inputs(inputs)
    folder = Path(str(inputs)).expanduser()
    table = folder / CAPTIONS_FILE if folder.is_dir() else None
    rows = read_captions(table) if table is not None and table.is_file() else {}
    if rows and source_prompt:
        log.info("source_prompt=%r is used for every image; captions in %s are ignored (labels kept)",
                 source_prompt, table)
    unknown = sorted(set(rows) - {f.name for f in files})
    if unknown:
        log.warning("%s names %d files that are not inputs (e.g. %s)", table, len(unknown), unknown[:3])
    items, bad = [], []
    for f in files:
        found = probe(f)
        if isinstance(found, str):
            bad.append(f"{f} ({found})")
            continue
        row = rows.get(f.name, {})
        items.append(EditInput(f, source_prompt or row.get("caption"), row.get("label"), found[0], found[1]))
    if bad and not skip_unreadable:
        raise ValueError(f"inputs: {len(bad)} unreadable image file(s): {'; '.join(bad[:5])}"
                         f"{' ...' if len(bad) > 5 else ''}; remove or fix them, or pass skip_unreadable=true")
    if bad:
        log.warning("inputs: skipped %d unreadable file(s): %s", len(bad), "; ".join(bad[:5]))
    if not items:
        raise ValueError(f"inputs={inputs}: no readable images")
    return items, bad


def load_inputs(items: list[EditInput], image_size: int, channels: int) -> torch.Tensor:
    """uint8 (N, channels, image_size, image_size) read exactly like training images
    (``CaptionFolderDataset.load_image``); fills each item's ``notes`` (and logs them)."""
    from t2ilab.data.captions import CaptionFolderDataset, Entry

    out = []
    for item in items:
        ds = CaptionFolderDataset([Entry(item.path.name, "", 0)], item.path.parent, image_size, channels)
        out.append(ds.load_image(0))
        item.notes = conversion_notes(item.size, item.mode, image_size, channels)
        if item.notes:
            log.info("%s: %s", item.path.name, "; ".join(item.notes))
    changed = sum(bool(i.notes) for i in items)
    if changed:
        log.warning("%d of %d inputs were converted to the model's %dx%d %s (see edits.jsonl 'notes')", changed,
                    len(items), image_size, image_size, "RGB" if channels == 3 else "grayscale")
    return torch.stack(out)
