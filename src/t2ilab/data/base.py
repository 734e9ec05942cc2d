"""Shared data plumbing: a captioned-image dataset contract and the datamodule that turns it
into the batch dict every model consumes.

Batch (DESIGN.md): ``{"image": float (N,C,H,W) in [-1,1], "cond": float (N,D),
"caption": list[str], "index": long (N,)}`` (+ ``"label": long (N,)`` where a dataset has one).

Text embeddings are computed ONCE per unique caption in ``setup`` (through the encoder's cache)
into a table; the collate function only indexes that table, so training steps never run the
text encoder.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from t2ilab.data.order import ResumableDataLoader, ResumableRandomSampler

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
CONDITION_SOURCES = ("text", "image_embedding")  # data.condition_source (set by utils/builders.py)


class CaptionedImageDataset(Dataset):
    """Contract for one split of a captioned image dataset.

    Subclasses implement ``__len__``, ``load_image(i) -> uint8 tensor (C,H,W)`` at the configured
    resolution/channels and ``caption(i) -> str``. Optional: ``label(i) -> int`` (class datasets),
    ``attributes(i) -> dict`` (ground truth for prompt-adherence evaluation), ``class_names``.
    """

    has_labels: bool = False

    def load_image(self, i: int) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def caption(self, i: int) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def label(self, i: int) -> int:
        raise NotImplementedError(f"{type(self).__name__} has no labels")

    def attributes(self, i: int) -> dict[str, Any]:
        return {"label": self.label(i)} if self.has_labels else {}

    def captions(self) -> list[str]:
        return [self.caption(i) for i in range(len(self))]

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {"image": self.load_image(i), "caption": self.caption(i), "index": i}
        if self.has_labels:
            item["label"] = self.label(i)
        return item


class InMemoryCaptionedDataset(CaptionedImageDataset):
    """A split held in memory: a uint8 image tensor and one precomputed caption per image."""

    def __init__(self, images: torch.Tensor, captions: list[str]):
        self.images, self._captions = images, captions

    def __len__(self) -> int:
        return len(self._captions)

    def load_image(self, i: int) -> torch.Tensor:
        return self.images[i]

    def caption(self, i: int) -> str:
        return self._captions[i]

    def captions(self) -> list[str]:
        return list(self._captions)


class _Collate:
    """Picklable collate: uint8 -> [-1,1] float; item index -> its row of the conditioning table."""

    def __init__(self, table: torch.Tensor | None, rows: torch.Tensor | None):
        self.table, self.rows = table, rows

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        images = torch.stack([it["image"] for it in items]).float().div_(127.5).sub_(1.0)
        batch: dict[str, Any] = {
            "image": images,
            "caption": [it["caption"] for it in items],
            "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
        }
        if "label" in items[0]:
            batch["label"] = torch.tensor([it["label"] for it in items], dtype=torch.long)
        if self.table is not None:
            batch["cond"] = self.table[self.rows[batch["index"]]]
        return batch


class CaptionedDataModule(L.LightningDataModule):
    """Base datamodule. Subclasses implement ``build_split(split) -> CaptionedImageDataset``.

    Args:
        image_size: output side length in pixels.
        channels: 1 (grayscale) or 3 (RGB).
        batch_size: per-device batch size.
        num_workers: DataLoader workers (0 = main process).
        text_encoder: object with ``encode_text`` (see encoders.base); None -> no "cond" in batches.
        condition_source: ``text`` (caption embeddings) or ``image_embedding`` (language-free training).
    """

    def __init__(self, image_size: int = 32, channels: int = 3, batch_size: int = 64,
                 num_workers: int = 0, text_encoder: Any = None, pin_memory: bool = False,
                 condition_source: str = "text"):
        super().__init__()
        self.image_size, self.channels = int(image_size), int(channels)
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.text_encoder = text_encoder
        self.datasets: dict[str, CaptionedImageDataset] = {}
        self._table: torch.Tensor | None = None
        self._row_of: dict[str, int] | None = None
        # seed of the training order; None = torch.initial_seed() when the loader is built. train.py pins
        # it to cfg.seed: under DDP every rank must shard the same permutation (data/order.py)
        self.shuffle_seed: int | None = None
        # perf.data_on_device (utils/fast_paths.py): in-memory splits batch by tensor indexing on this device
        self.batches_on: torch.device | None = None
        # data.condition_source: "text" (caption embeddings) or "image_embedding" (language-free training on
        # the encoder's image embeddings, data/image_embeddings.py; prompts are still encoded as text)
        if condition_source not in CONDITION_SOURCES:
            raise ValueError(f"data.condition_source={condition_source!r}: expected one of {CONDITION_SOURCES}")
        self.condition_source = condition_source
        self._image_tables: dict[str, torch.Tensor] = {}

    # -- to implement -------------------------------------------------------------------------
    def build_split(self, split: str) -> CaptionedImageDataset:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------
    def dataset(self, split: str) -> CaptionedImageDataset:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        if split not in self.datasets:
            ds = self.build_split(split)
            if len(ds) == 0:
                raise ValueError(f"{type(self).__name__}: the {split!r} split is empty - check the data "
                                 "path / captions file and the reported exclusions above")
            self.datasets[split] = ds
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        splits = ("train", "val") if stage in (None, "fit", "validate") else ("test",)
        for s in splits:
            self.dataset(s)
        self._build_embedding_table()

    def _build_embedding_table(self) -> None:
        if self.text_encoder is None or self.condition_source == "image_embedding":
            return
        captions: set[str] = set()
        for ds in self.datasets.values():
            captions.update(ds.captions())
        known = set(self._row_of or {})
        if self._table is not None and captions <= known:
            return
        unique = sorted(captions | known)
        log.info("encoding %d unique captions (cached per encoder fingerprint)", len(unique))
        self._table = self.text_encoder.encode_text(unique).float().cpu().contiguous()
        self._row_of = {c: i for i, c in enumerate(unique)}

    def embedding_table(self) -> torch.Tensor | None:
        """(U, D) embeddings of every unique caption of the loaded splits (None without encoder, and for
        language-free training: no caption mean to centre on; image and text embeddings differ in mean)."""
        self._build_embedding_table()
        return self._table

    def encode(self, captions: list[str]) -> torch.Tensor:
        """Embeddings for arbitrary prompts (sample grids, evaluation) via the encoder's cache."""
        if self.text_encoder is None:
            raise RuntimeError("this datamodule has no text_encoder; pass one to encode prompts")
        return self.text_encoder.encode_text(list(captions)).float()

    def cond_rows(self, split: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(conditioning table, row of each item of ``split``): caption embeddings indexed by caption,
        or (language-free) the split's image embeddings, one row per item."""
        ds = self.dataset(split)
        if self.text_encoder is None:
            return None, None
        if self.condition_source == "image_embedding":
            if split not in self._image_tables:
                from t2ilab.data.image_embeddings import embed_split

                self._image_tables[split] = embed_split(self.text_encoder, ds)
            return self._image_tables[split], torch.arange(len(ds))
        # (re)build when this split brings captions the table lacks (e.g. test after setup("fit"))
        self._build_embedding_table()
        return self._table, torch.tensor([self._row_of[c] for c in ds.captions()], dtype=torch.long)

    def _loader(self, split: str, shuffle: bool, drop_last: bool | None = False) -> DataLoader:
        """``drop_last=None``: drop an incomplete last batch when this rank has more than one batch."""
        ds = self.dataset(split)
        table, rows = self.cond_rows(split)
        # training order: a seeded per-epoch permutation that needs no global RNG and can skip the
        # batches a resumed run already saw; under DDP each rank gets its disjoint shard of it
        # (data/order.py); seed = the run's seed (the same on every rank)
        sampler = None
        if shuffle:
            seed = torch.initial_seed() if self.shuffle_seed is None else int(self.shuffle_seed)
            sampler = ResumableRandomSampler(len(ds), seed)
        if drop_last is None:
            drop_last = (len(sampler) if sampler is not None else len(ds)) > self.batch_size
        loader_cls = DataLoader if sampler is None else ResumableDataLoader
        if self.batches_on is not None and isinstance(ds, InMemoryCaptionedDataset) and self.num_workers == 0:
            from t2ilab.data.tensor_batches import TensorBatches, identity_collate

            return loader_cls(TensorBatches(ds, table, rows, self.batches_on),
                              batch_size=self.batch_size, sampler=sampler, drop_last=drop_last,
                              collate_fn=identity_collate)
        return loader_cls(ds, batch_size=self.batch_size, sampler=sampler, drop_last=drop_last,
                          num_workers=self.num_workers, pin_memory=self.pin_memory,
                          collate_fn=_Collate(table, rows), persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True, drop_last=None)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
