"""Real-data reference statistics, computed once and cached on disk.

``<cache_dir>/reference_stats/<key>.pt`` holds the real 2048-d features (float32, needed by KID and
precision/recall), their Fréchet statistics (mean + covariance factor, float64; see
fidelity.frechet_stats), the Inception Score of the real images and k-NN radii per k; ``<key>.json`` is a
human-readable description. The key hashes: dataset identity (datamodule class + its defining
scalar settings + a hash of the split's captions), split, resolution, channels, number of real
images, the extractor fingerprint (weights sha256, torch-fidelity version, preprocessing) and the
file format. Writes go to a temp file + ``os.replace``, so concurrent runs never see partial files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from t2ilab.utils.io import atomic_torch_save
from t2ilab.evaluation.fidelity import frechet_stats, inception_score, knn_radii

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: Fréchet covariance factor instead of sigma
# datamodule attributes that change how data is served, not which data it is (``trainer`` and
# ``text_encoder`` are None when unset: that must not make the callback's and eval's keys differ)
_NOT_IDENTITY = {"batch_size", "num_workers", "pin_memory", "prepare_data_per_node", "trainer", "text_encoder",
                 "allow_zero_length_dataloader_with_multiple_devices",
                 "shuffle_seed",  # training order only (train.py pins it; a bare datamodule has None)
                 "batches_on"}  # where batches are built (perf.data_on_device), not which images
_SCALARS = (str, int, float, bool, type(None), Path)


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def dataset_identity(datamodule: Any, split: str) -> dict[str, Any]:
    """What defines the real images of ``split``: class, public scalar settings, captions hash.

    Args:
        datamodule: a CaptionedDataModule (any object with ``dataset(split)``).
        split: "train" / "val" / "test".
    """
    settings = {}
    for k, v in sorted(vars(datamodule).items()):
        ok = isinstance(v, _SCALARS) or (isinstance(v, (list, tuple)) and all(isinstance(x, _SCALARS) for x in v))
        if not k.startswith("_") and k not in _NOT_IDENTITY and ok:
            settings[k] = _plain(v)
    ds = datamodule.dataset(split)
    captions = hashlib.sha256("\n".join(ds.captions()).encode()).hexdigest()[:16]
    return {"datamodule": f"{type(datamodule).__module__}.{type(datamodule).__qualname__}",
            "settings": settings, "split": split, "size": len(ds), "captions_sha": captions}


def _key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def reference_indices(n_split: int, num_reference: int | None) -> np.ndarray:
    """Which split items form the reference set: all of them, or the first ``num_reference`` of a
    fixed permutation (seed 0, so the set depends only on the split and the count).

    Args:
        n_split: size of the split.
        num_reference: number of real images (None or >= n_split = all).
    """
    if num_reference is None or num_reference >= n_split:
        return np.arange(n_split)
    return np.sort(np.random.default_rng(0).permutation(n_split)[:num_reference])


class ReferenceStats:
    """Cached real-data statistics for one (dataset, split, N, extractor) combination.

    Args:
        cache_dir: root cache folder (``reference_stats/`` is created under it).
        identity: ``dataset_identity(...)`` of the real split.
        image_size: resolution of the real images.
        channels: channels of the real images.
        num_reference: number of real images used (None = the whole split).
        extractor: an InceptionExtractor (its fingerprint is part of the key).
    """

    def __init__(self, cache_dir: str | os.PathLike, identity: dict[str, Any], image_size: int, channels: int,
                 num_reference: int | None, extractor: Any):
        self.extractor = extractor
        self.indices = reference_indices(identity["size"], num_reference)
        self.description = {"format": FORMAT_VERSION, "dataset": identity, "image_size": int(image_size),
                            "channels": int(channels), "num_reference": len(self.indices),
                            "extractor": extractor.fingerprint, "extractor_identity": extractor.identity}
        self.key = _key(self.description)
        self.path = Path(cache_dir).expanduser() / "reference_stats" / f"{self.key}.pt"
        self._data: dict[str, Any] | None = None

    @property
    def cached(self) -> bool:
        """Whether the statistics are already on disk."""
        return self.path.is_file()

    def load_or_compute(self, load_images: Callable[[np.ndarray], torch.Tensor], batch_size: int) -> dict[str, Any]:
        """The cached statistics; on a miss, reads the real images ONCE and writes the cache.

        Args:
            load_images: split indices -> uint8 images (n, C, H, W).
            batch_size: images read + featurised per step.
        """
        if self._data is None and self.cached:
            try:
                self._data = torch.load(self.path, map_location="cpu", weights_only=True)
                log.info("reference statistics: cache hit %s (%d real images)", self.path, self._data["n"])
            except Exception as e:  # noqa: BLE001 - corrupt/truncated file from an old crash: recompute
                log.warning("reference statistics %s unreadable (%s): recomputing", self.path, e)
        if self._data is None:
            self._data = self._compute(load_images, batch_size)
        return self._data

    def _compute(self, load_images: Callable[[np.ndarray], torch.Tensor], batch_size: int) -> dict[str, Any]:
        t0, idx = time.perf_counter(), self.indices
        parts: dict[str, list[torch.Tensor]] = {"2048": [], "logits_unbiased": []}
        for start in range(0, len(idx), batch_size):
            feats = self.extractor(load_images(idx[start:start + batch_size]))
            for k in parts:
                parts[k].append(feats[k])
        features = torch.cat(parts["2048"]).contiguous()
        data = {"n": len(idx), "key": self.key, "features": features,
                "frechet": {k: v.cpu() for k, v in frechet_stats(features).items()},
                "isc_real": inception_score(torch.cat(parts["logits_unbiased"]))["isc_mean"], "radii": {}}
        atomic_torch_save(data, self.path)
        desc = dict(self.description, created=time.strftime("%Y-%m-%d %H:%M:%S"))
        self.path.with_suffix(".json").write_text(json.dumps(desc, indent=1, default=str))
        log.info("reference statistics: %d real images featurised in %.1fs -> %s", len(idx),
                 time.perf_counter() - t0, self.path)
        return data

    def _get(self, key: str) -> Any:
        assert self._data is not None, "call load_or_compute first"
        return self._data[key]

    def frechet(self) -> dict[str, torch.Tensor]:
        """Fréchet statistics {"mu", "factor"} of the real features (float64, CPU)."""
        return self._get("frechet")

    def features(self) -> torch.Tensor:
        """Real (N, 2048) float32 features."""
        return self._get("features")

    @property
    def isc_real(self) -> float:
        """Inception Score of the real reference images."""
        return float(self._get("isc_real"))

    def radii(self, k: int, device: str | torch.device = "cpu") -> torch.Tensor:
        """k-NN radii of the real features, computed once per k and added to the cache file.

        Args:
            k: neighbourhood size.
            device: where to compute (the evaluation device).
        """
        radii = self._get("radii")
        if int(k) not in radii:
            radii[int(k)] = knn_radii(self.features().to(device), int(k)).cpu()
            atomic_torch_save(self._data, self.path)
        return radii[int(k)]
