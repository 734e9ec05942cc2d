"""Class-labelled datasets (Fashion-MNIST, MNIST, CIFAR-10) captioned with prompt templates.

One shared datamodule does the work: load the official train/test arrays once, carve a
deterministic validation holdout out of train, resize/pad and convert channels once at setup,
and caption every item with a (seeded, per-item) template filled with its plain-words class name.
Subclasses only name their classes/templates and say how to read the official arrays.
"""

from __future__ import annotations

import gzip
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from t2ilab.data.base import CaptionedDataModule, InMemoryCaptionedDataset

log = logging.getLogger(__name__)

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
GENERIC_TEMPLATES = ("a photo of a {}", "a black and white photo of a {}", "a picture of a {}",
                     "an image of a {}", "a small photo of a {}", "a low resolution photo of a {}")


def _article(text: str) -> str:
    return re.sub(r"\b([aA]) (?=[aeiouAEIOU])", r"\1n ", re.sub(r"\b([aA])n (?=[^aeiouAEIOU])", r"\1 ", text))


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an (optionally gzipped) IDX file (the MNIST format) into a numpy array."""
    path = Path(path)
    data = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic)")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise ValueError(f"{path}: unknown IDX dtype code {data[2]:#x}")
    ndim = data[3]
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    arr = np.frombuffer(data, dtype=dtypes[data[2]], offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{path}: expected {shape} values, file holds {arr.size}")
    return arr.reshape(shape)


class ClassPromptDataset(InMemoryCaptionedDataset):
    """In-memory class dataset with template captions.

    Args:
        images: uint8 tensor (N, C, H, W), already at the output size/channels.
        labels: int64 array (N,) of class indices.
        template_ids: int array (N,) of template indices per item.
        templates: caption templates with one ``{}`` for the class name.
        class_names: plain-words class names indexed by label.
    """

    has_labels = True

    def __init__(self, images: torch.Tensor, labels: np.ndarray, template_ids: np.ndarray,
                 templates: tuple[str, ...], class_names: tuple[str, ...]):
        self.labels, self.template_ids = labels.astype(np.int64), template_ids
        self.templates, self.class_names = tuple(templates), list(class_names)
        super().__init__(images, [_article(self.templates[t].format(self.class_names[y]))
                                  for t, y in zip(template_ids.tolist(), self.labels.tolist())])

    def label(self, i: int) -> int:
        return int(self.labels[i])

    def attributes(self, i: int) -> dict[str, Any]:
        y = int(self.labels[i])
        return {"label": y, "class_name": self.class_names[y], "template": int(self.template_ids[i])}


class ClassPromptDataModule(CaptionedDataModule):
    """Shared logic for class datasets captioned by templates. Subclasses set ``CLASS_NAMES``,
    ``TEMPLATES``, ``DISPLAY_NAME`` and implement ``load_official(train)``.

    Args:
        name: config group choice (ignored).
        data_dir: where torchvision datasets live / are downloaded to.
        seed: seed for the validation holdout, the train subsample and the per-item templates.
        val_size: images held out of the official train split for validation.
        limit_train: keep only this many training images (deterministic subsample; None = all).
        resize_mode: "pad" (zero-pad/centre, needs image_size >= native) or "resize" (antialiased).
        image_size: output side length in pixels.
        channels: 1 (gray; RGB via luminance) or 3 (RGB; gray repeated).
        batch_size: per-device batch size.
        num_workers: DataLoader workers.
        pin_memory: DataLoader pin_memory.
        text_encoder: encoder providing ``encode_text`` (None -> batches without "cond").
    """

    CLASS_NAMES: tuple[str, ...] = ()
    TEMPLATES: tuple[str, ...] = GENERIC_TEMPLATES
    DISPLAY_NAME: str = "dataset"

    def __init__(self, name: str = "", data_dir: str = "data", seed: int = 0, val_size: int = 5000,
                 limit_train: int | None = None, resize_mode: str = "pad", image_size: int = 32,
                 channels: int = 1, batch_size: int = 64, num_workers: int = 0, pin_memory: bool = False,
                 text_encoder: Any = None, condition_source: str = "text"):
        super().__init__(image_size=image_size, channels=channels, batch_size=batch_size,
                         num_workers=num_workers, text_encoder=text_encoder, pin_memory=pin_memory,
                         condition_source=condition_source)
        if resize_mode not in ("pad", "resize"):
            raise ValueError(f"resize_mode must be 'pad' or 'resize', got {resize_mode!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.data_dir, self.seed, self.val_size = Path(str(data_dir)), int(seed), int(val_size)
        self.limit_train = None if limit_train is None else int(limit_train)
        self.resize_mode = resize_mode
        self.class_names = list(self.CLASS_NAMES)
        self._official: dict[bool, tuple[np.ndarray, np.ndarray]] = {}

    # -- to implement -------------------------------------------------------------------------
    def load_official(self, train: bool) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        """Official split -> (uint8 images (N,H,W) or (N,H,W,3), int labels (N,))."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------
    def _torchvision(self, cls: Any, train: bool, where: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            ds = cls(root=str(self.data_dir), train=train, download=True)
        except Exception as e:  # noqa: BLE001 - network/integrity errors vary by version
            raise RuntimeError(
                f"could not load {self.DISPLAY_NAME} ({'train' if train else 'test'}) from "
                f"{self.data_dir} and the download failed ({type(e).__name__}: {e}). Without network, "
                f"put the files at {self.data_dir / where} (data_dir / paths.data_dir)") from e
        data = ds.data.numpy() if isinstance(ds.data, torch.Tensor) else np.asarray(ds.data)
        return data.astype(np.uint8, copy=False), np.asarray(ds.targets, dtype=np.int64)

    def _official_split(self, train: bool) -> tuple[np.ndarray, np.ndarray]:
        if train not in self._official:
            images, labels = self.load_official(train)
            if len(images) != len(labels):
                raise ValueError(f"{self.DISPLAY_NAME}: {len(images)} images but {len(labels)} labels")
            if labels.size and (labels.min() < 0 or labels.max() >= len(self.CLASS_NAMES)):
                raise ValueError(f"{self.DISPLAY_NAME}: labels outside [0, {len(self.CLASS_NAMES)})")
            self._official[train] = (images, labels.astype(np.int64))
        return self._official[train]

    def _rng(self, *keys: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, *keys])

    def split_indices(self, split: str, n_official: int) -> np.ndarray:
        """Indices into the official train (train/val) or test (test) arrays, deterministic."""
        if split == "test":
            return np.arange(n_official)
        if not 0 < self.val_size < n_official:
            raise ValueError(f"val_size={self.val_size} must be in (0, {n_official})")
        perm = self._rng(0).permutation(n_official)
        if split == "val":
            return np.sort(perm[:self.val_size])
        train = perm[self.val_size:]
        if self.limit_train is not None:
            train = train[:self.limit_train]
        return np.sort(train)

    def convert(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (N,H,W[,3]) -> uint8 tensor (N, channels, image_size, image_size)."""
        x = torch.from_numpy(np.ascontiguousarray(images))
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        h, w = x.shape[-2:]
        s = self.image_size
        if (h, w) != (s, s):
            if self.resize_mode == "pad":
                if h > s or w > s:
                    raise ValueError(f"resize_mode=pad needs image_size >= {max(h, w)} (native size); "
                                     f"got {s}: use resize_mode=resize")
                top, left = (s - h) // 2, (s - w) // 2
                x = F.pad(x, (left, s - w - left, top, s - h - top), value=0)
            else:
                chunks = [F.interpolate(c.float(), size=(s, s), mode="bilinear", antialias=True,
                                        align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
                          for c in x.split(4096)]
                x = torch.cat(chunks)
        if x.shape[1] == 1 and self.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] == 3 and self.channels == 1:
            w8 = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            x = torch.cat([(c.float() * w8).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
                           for c in x.split(4096)])
        return x.contiguous()

    def build_split(self, split: str) -> ClassPromptDataset:
        images, labels = self._official_split(train=split != "test")
        idx = self.split_indices(split, len(labels))
        # one template per OFFICIAL item, so an image keeps its caption whatever limit_train is
        tpl = self._rng(1, int(split == "test")).integers(0, len(self.TEMPLATES), size=len(labels))
        ds = ClassPromptDataset(self.convert(images[idx]), labels[idx], tpl[idx], self.TEMPLATES,
                                self.CLASS_NAMES)
        log.info("%s[%s]: %d images -> %s", self.DISPLAY_NAME, split, len(ds), tuple(ds.images.shape[1:]))
        return ds


class FashionMNISTDataModule(ClassPromptDataModule):
    """Fashion-MNIST; read from ``source_dir`` (IDX .gz files) when present, else torchvision.

    Args:
        source_dir: folder with train-images-idx3-ubyte.gz etc. (Debian dataset-fashion-mnist).
        **kwargs: see ``ClassPromptDataModule``.
    """

    CLASS_NAMES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                   "bag", "ankle boot")
    DISPLAY_NAME = "Fashion-MNIST"

    def __init__(self, source_dir: str | None = FASHION_MNIST_DIR, **kwargs: Any):
        super().__init__(**kwargs)
        self.source_dir = Path(str(source_dir)) if source_dir else None

    def load_official(self, train: bool) -> tuple[np.ndarray, np.ndarray]:
        prefix = "train" if train else "t10k"
        if self.source_dir is not None:
            img = self.source_dir / f"{prefix}-images-idx3-ubyte.gz"
            lab = self.source_dir / f"{prefix}-labels-idx1-ubyte.gz"
            if img.is_file() and lab.is_file():
                log.info("Fashion-MNIST: reading %s", self.source_dir)
                return read_idx(img), read_idx(lab).astype(np.int64)
            log.info("Fashion-MNIST: %s has no %s files; using torchvision in %s",
                     self.source_dir, prefix, self.data_dir)
        from torchvision.datasets import FashionMNIST
        return self._torchvision(FashionMNIST, train, "FashionMNIST/raw/ (the 4 *-ubyte.gz files)")


class MNISTDataModule(ClassPromptDataModule):
    """MNIST via torchvision (downloaded into ``data_dir``). Args: see ``ClassPromptDataModule``."""

    CLASS_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    TEMPLATES = ("a handwritten {}", "the digit {}", "a photo of the digit {}",
                 "a black and white picture of the number {}", "an image of a handwritten {}",
                 "the number {} written by hand")
    DISPLAY_NAME = "MNIST"

    def load_official(self, train: bool) -> tuple[np.ndarray, np.ndarray]:
        from torchvision.datasets import MNIST
        return self._torchvision(MNIST, train, "MNIST/raw/ (the 4 *-ubyte.gz files)")


class CIFAR10DataModule(ClassPromptDataModule):
    """CIFAR-10 via torchvision (downloaded into ``data_dir``). Args: see ``ClassPromptDataModule``."""

    CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck")
    TEMPLATES = ("a photo of a {}", "a picture of a {}", "an image of a {}", "a small photo of a {}",
                 "a low resolution photo of a {}", "a blurry photo of a {}")
    DISPLAY_NAME = "CIFAR-10"

    def load_official(self, train: bool) -> tuple[np.ndarray, np.ndarray]:
        from torchvision.datasets import CIFAR10
        return self._torchvision(CIFAR10, train, "cifar-10-python.tar.gz")
