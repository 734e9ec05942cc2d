"""Image plumbing shared by evaluation and the sample writer: float -> uint8 exactly as PNGs are
saved, PNG folder export (+ prompts.jsonl) and reading an image folder back like torch-fidelity.

Quantisation convention (``to_uint8``) is torchvision's ``save_image``:
``x.mul(255).add_(0.5).clamp_(0, 255).to(uint8)`` = round-half-up of ``255 * x``. Note that
``torchvision.transforms.functional.to_pil_image`` on a FLOAT tensor truncates (``mul(255).byte()``),
i.e. it is 0.5/255 darker on average: always quantise with ``to_uint8`` first and save the uint8
tensor, so saved PNGs and in-memory evaluation see identical pixels.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from t2ilab.utils.io import atomic_write

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def image_seed(seed: int, index: int) -> int:
    """Seed of global image ``index`` for base seed ``seed`` (what prompts.jsonl records).

    Args:
        seed: base seed of the request.
        index: global image index.
    """
    return int(seed) + int(index)


def grid_path_beside(sample_dir: str | os.PathLike) -> Path:
    """``<parent>/<name>_grid.png`` for sample folder ``<parent>/<name>`` (e.g. ``samples_grid.png``).

    Args:
        sample_dir: the sample folder.
    """
    d = Path(sample_dir).expanduser().absolute()
    return d.parent / f"{d.name}_grid.png"


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0,1] (any shape, any device) -> uint8, same rounding as ``save_image``.

    Args:
        images: float tensor in [0, 1]; values outside are clamped, NaN becomes 0.
    """
    if images.dtype == torch.uint8:
        return images
    x = torch.nan_to_num(images.detach().float(), nan=0.0)
    return x.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


def to_rgb(images: torch.Tensor) -> torch.Tensor:
    """(N,1,H,W) -> (N,3,H,W) by repeating the channel (what PIL's ``convert("RGB")`` does); RGB unchanged.

    Args:
        images: tensor (N, C, H, W) with C in {1, 3}.
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images (N,C,H,W) with C in {{1,3}}, got {tuple(images.shape)}")
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def save_png(image: torch.Tensor, path: str | os.PathLike) -> None:
    """Write one uint8 (C,H,W) image (C=1 -> grayscale PNG, C=3 -> RGB PNG).

    Args:
        image: uint8 tensor (C, H, W), C in {1, 3}.
        path: destination file.
    """
    arr = image.detach().cpu().numpy()
    arr = arr[0] if arr.shape[0] == 1 else np.ascontiguousarray(arr.transpose(1, 2, 0))
    Image.fromarray(arr).save(path)


SAMPLE_INDEX = "prompts.jsonl"


def sample_record(index: int, prompt: str, seed: int, sampling: dict[str, Any],
                  label: int | None = None) -> dict[str, Any]:
    """One ``prompts.jsonl`` line (the schema every writer uses): file, index, prompt, seed (of this
    image), sampling (the effective options) and label when known.

    Args:
        index: global sample index.
        prompt: its prompt.
        seed: its generator seed (``image_seed(base, index)``).
        sampling: effective sampling options.
        label: class label of its prompt, None when unknown.
    """
    row = {"file": SampleWriter.filename(index), "index": int(index), "prompt": str(prompt), "seed": int(seed),
           "sampling": dict(sampling)}
    if label is not None:
        row["label"] = int(label)
    return row


class SampleWriter:
    """The one sample writer: ``<dir>/<index:06d>.png`` (uint8 as ``to_uint8`` quantises; gray PNG
    for 1 channel) plus ``<dir>/prompts.jsonl`` (:func:`sample_record` per line). ``t2ilab.sample``,
    the final samples of training, ``t2ilab.eval`` and the evaluation callback all write through it.

    The folder holds only sample PNGs and prompts.jsonl, so external tools read it as is
    (``fidelity --input1 DIR``, clean-fid's ``compute_fid(DIR, ...)``); grids go BESIDE it
    (``tracking.grid.grid_path_beside``). Every rank may write its own images; one process
    (rank 0) calls ``write_index``, which also removes stale ``NNNNNN.png`` of an earlier, larger
    export into the same folder.

    Args:
        directory: output folder (created).
    """

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def filename(index: int) -> str:
        """File name of global sample ``index``."""
        return f"{int(index):06d}.png"

    def write_images(self, images: torch.Tensor, indices: Sequence[int]) -> None:
        """Save images (N,C,H,W) under their global indices.

        Args:
            images: uint8 tensor, or float in [0,1] (quantised with ``to_uint8``).
            indices: global sample index of each image.
        """
        for img, i in zip(to_uint8(images).cpu(), indices):
            save_png(img, self.dir / self.filename(int(i)))

    def write_index(self, prompts: Sequence[str], seed: int, sampling: dict[str, Any],
                    labels: Sequence[int | None] | None = None) -> Path:
        """Write prompts.jsonl for samples ``0..len(prompts)-1`` (atomically); returns its path.

        Args:
            prompts: prompt of every sample, by global index.
            seed: base seed (sample i has seed ``image_seed(seed, i)``).
            sampling: effective sampling options (same for every sample).
            labels: label of every sample's prompt (None where unknown), or None.
        """
        labels = [None] * len(prompts) if labels is None else list(labels)
        listed_before = listed_files(self.dir)
        path = atomic_write(self.dir / SAMPLE_INDEX, "".join(
            json.dumps(sample_record(i, p, image_seed(seed, i), sampling, y)) + "\n"
            for i, (p, y) in enumerate(zip(prompts, labels, strict=True))))
        self._remove_stale(len(prompts), listed_before)
        return path

    def _remove_stale(self, n: int, listed_before: set[str]) -> None:
        """Remove ``NNNNNN.png`` of an earlier, larger export into this folder — only files that export's own
        prompts.jsonl listed (a file someone else put here is never deleted)."""
        stale, other = [], []
        for p in self.dir.iterdir():
            if p.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            if _SAMPLE_NAME.fullmatch(p.name) and int(p.stem) >= n and p.name in listed_before:
                stale.append(p)
            elif not _SAMPLE_NAME.fullmatch(p.name) or int(p.stem) >= n:
                other.append(p.name)
        for p in stale:
            p.unlink(missing_ok=True)
        if stale:
            log.info("removed %d stale sample PNGs (index >= %d) from %s", len(stale), n, self.dir)
        if other:
            log.warning("%s holds %d image files that are not samples of this export (%s...): tools reading the "
                        "folder (torch-fidelity, clean-fid) will count them", self.dir, len(other), sorted(other)[:3])


def listed_files(directory: str | os.PathLike) -> set[str]:
    """File names the folder's ``prompts.jsonl`` lists (what an earlier t2ilab export wrote there); empty
    when there is no (readable) index."""
    path = Path(directory) / SAMPLE_INDEX
    names: set[str] = set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return names
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("file"), str) and "/" not in row["file"]:
            names.add(row["file"])
    return names


def claim_sample_dir(out_dir: str | os.PathLike, overwrite: bool, option: str = "out_dir") -> Path:
    """A sample export's folder, by the one output-folder rule (utils.io.claim_out_dir): what an earlier export
    owns is what its ``prompts.jsonl`` lists (plus that index, and the grid beside the folder); a
    sample-named ``NNNNNN.png`` it did not list is refused, since the export would overwrite it."""
    from t2ilab.utils.io import claim_out_dir

    p = Path(str(out_dir)).expanduser()
    ours = listed_files(p) | {SAMPLE_INDEX}
    p = claim_out_dir(p, overwrite, ours.__contains__, option=option, collides=_SAMPLE_NAME.fullmatch,
                      what="what an earlier sample export wrote there (the files its prompts.jsonl lists)")
    if overwrite:
        grid_path_beside(p).unlink(missing_ok=True)
    return p


_SAMPLE_NAME = re.compile(r"\d{6,}\.png")


def stack_images(dataset: Any, indices: Sequence[int]) -> torch.Tensor:
    """uint8 (n, C, H, W) of ``dataset.load_image(i)`` for ``indices`` (a CaptionedImageDataset).

    Args:
        dataset: object with ``load_image(i) -> uint8 (C, H, W)``.
        indices: item indices.
    """
    return torch.stack([dataset.load_image(int(i)) for i in indices])


def list_images(directory: str | os.PathLike) -> list[str]:
    """Sorted image files of a folder (non-recursive), in the order torch-fidelity reads them.

    Args:
        directory: folder with .png/.jpg/.jpeg files.
    """
    d = Path(directory)
    files = [os.path.realpath(p) for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        raise FileNotFoundError(f"no {'/'.join(IMAGE_EXTENSIONS)} images in {d}")
    return sorted(files)


def load_image_folder(directory: str | os.PathLike) -> torch.Tensor:
    """All images of a folder as uint8 (N,3,H,W), converted to RGB like torch-fidelity does.

    Args:
        directory: folder of equally sized images.
    """
    arrs = [np.asarray(Image.open(p).convert("RGB")) for p in list_images(directory)]
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()
