"""Batches of an in-memory split gathered by tensor indexing (``perf.data_on_device``).

The split's uint8 images, its item -> conditioning-table rows and its labels are put on the
training device once; a batch is then one ``index_select`` per tensor and a uint8 -> float
conversion on the device: no per-item Python, no DataLoader workers, no host->device image copy
per step. The DataLoader keeps its sampler (``ResumableRandomSampler``: seeded order, exact resume,
DDP shards) and batch size; it only calls ``__getitems__`` with a whole batch of indices.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.utils.data import Dataset


def identity_collate(batch: dict[str, Any]) -> dict[str, Any]:
    """``__getitems__`` already returns the batch (module-level: picklable)."""
    return batch


class TensorBatches(Dataset):
    """A view of an in-memory captioned split whose ``__getitems__`` builds whole batches on ``device``.

    Args:
        dataset: an ``InMemoryCaptionedDataset`` (``images``: uint8 (N, C, H, W)).
        table: (U, D) conditioning table; None = no ``cond`` in batches.
        rows: (N,) row of ``table`` per item.
        device: where the tensors live and batches are built.
    """

    def __init__(self, dataset: Any, table: torch.Tensor | None, rows: torch.Tensor | None,
                 device: torch.device | str):
        self.dataset, self.device = dataset, torch.device(device)
        self.images = dataset.images.to(self.device).contiguous()
        self.captions = dataset.captions()
        self.table = table.to(self.device) if table is not None else None
        self.rows = rows.to(self.device, torch.long) if table is not None else None
        self.labels = (torch.tensor([dataset.label(i) for i in range(len(dataset))], dtype=torch.long,
                                    device=self.device) if getattr(dataset, "has_labels", False) else None)

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.__getitems__([i])

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        idx = torch.as_tensor(list(indices), dtype=torch.long).to(self.device, non_blocking=True)
        batch: dict[str, Any] = {
            "image": self.images.index_select(0, idx).float().div_(127.5).sub_(1.0),
            "caption": [self.captions[i] for i in indices],
            "index": idx,
        }
        if self.labels is not None:
            batch["label"] = self.labels.index_select(0, idx)
        if self.table is not None:
            batch["cond"] = self.table.index_select(0, self.rows.index_select(0, idx))
        return batch
