"""Checkpoint files that are either complete or absent.

Lightning's ``TorchCheckpointIO`` serialises into memory and lets fsspec write a temp file in the
*system* temp dir, then ``shutil.move`` it to the run dir. When /tmp and the run dir are on
different file systems (the usual cluster layout: local /tmp, shared outputs) that move is a copy,
so ``kill -9`` or a full disk during it leaves a truncated ``last.ckpt`` / ``step=*.ckpt``, and the
whole checkpoint is held in memory twice. Here ``torch.save`` writes straight into a temp file
next to the target, which is flushed, fsync'ed and renamed over the target (``os.replace`` is
atomic within a file system); on any failure the temp file is removed and the target untouched.
"""

from __future__ import annotations

from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from t2ilab.utils.io import atomic_torch_save


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning CheckpointIO plugin: local paths are written with :func:`atomic_torch_save`
    (remote URLs keep Lightning's fsspec path)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path) or storage_options is not None:
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_torch_save(checkpoint, path)
