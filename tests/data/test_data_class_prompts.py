"""Class datasets captioned by templates: real Fashion-MNIST, conversions, splits, offline errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from t2ilab.data.class_prompts import (FASHION_MNIST_DIR, CIFAR10DataModule, FashionMNISTDataModule,
                                       MNISTDataModule, read_idx)

FMNIST = Path(FASHION_MNIST_DIR)
HAVE_FMNIST = (FMNIST / "t10k-images-idx3-ubyte.gz").is_file() and (FMNIST / "train-images-idx3-ubyte.gz").is_file()
needs_fmnist = pytest.mark.skipif(not HAVE_FMNIST, reason=f"Fashion-MNIST IDX files not found in {FMNIST} "
                                  "(install the Debian package dataset-fashion-mnist)")


@pytest.fixture(scope="module")
def fmnist() -> FashionMNISTDataModule:
    if not HAVE_FMNIST:
        pytest.skip(f"Fashion-MNIST IDX files not found in {FMNIST}")
    dm = FashionMNISTDataModule(data_dir="/nonexistent", seed=0, val_size=1000, limit_train=800,
                                batch_size=50, name="fashion_mnist")
    dm.setup("fit")
    dm.setup("test")
    return dm


@needs_fmnist
def test_fashion_mnist_real_data(fmnist, fake_encoder):
    sizes = {s: len(fmnist.dataset(s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 800, "val": 1000, "test": 10000}
    raw_test = read_idx(FMNIST / "t10k-images-idx3-ubyte.gz")
    raw_labels = read_idx(FMNIST / "t10k-labels-idx1-ubyte.gz")
    assert raw_test.shape == (10000, 28, 28) and raw_labels.shape == (10000,)
    test = fmnist.dataset("test")
    assert test.images.shape == (10000, 1, 32, 32) and test.images.dtype == torch.uint8
    # pad mode: black 2px border, the official image unchanged in the middle, labels in order
    assert test.images[:, :, :2].max() == 0 and test.images[:, :, :, -2:].max() == 0
    assert torch.equal(test.images[:, 0, 2:30, 2:30], torch.from_numpy(raw_test.copy()))
    assert np.array_equal(test.labels, raw_labels)
    for split in ("train", "val", "test"):
        ds = fmnist.dataset(split)
        labels = [ds.label(i) for i in range(len(ds))]
        assert 0 <= min(labels) and max(labels) <= 9 and len(set(labels)) == 10
        for i in range(0, len(ds), 37):
            assert ds.class_names[ds.label(i)] in ds.caption(i), (ds.caption(i), ds.label(i))
        assert len({ds.attributes(i)["template"] for i in range(len(ds))}) >= 4
    assert any(c.startswith("an ") for c in test.captions()) and not any(" a ankle" in c for c in test.captions())


@needs_fmnist
def test_fashion_mnist_splits_are_disjoint_and_deterministic(fmnist):
    n = 60000
    train, val = fmnist.split_indices("train", n), fmnist.split_indices("val", n)
    assert len(val) == 1000 and len(train) == 800 and not set(train) & set(val)
    full = FashionMNISTDataModule(seed=0, val_size=1000).split_indices("train", n)
    assert len(full) == n - 1000 and set(train) <= set(full) and not set(full) & set(val)
    other = FashionMNISTDataModule(seed=1, val_size=1000).split_indices("val", n)
    assert not np.array_equal(other, val)
    # same seed -> identical images and captions
    again = FashionMNISTDataModule(seed=0, val_size=1000, limit_train=800)
    assert torch.equal(again.dataset("train").images, fmnist.dataset("train").images)
    assert again.dataset("val").captions() == fmnist.dataset("val").captions()


@needs_fmnist
def test_fashion_mnist_loader_batches(fake_encoder):
    dm = FashionMNISTDataModule(val_size=500, limit_train=200, batch_size=50, text_encoder=fake_encoder,
                                channels=3, resize_mode="resize", image_size=40)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (50, 3, 40, 40)
    assert torch.equal(batch["image"][:, 0], batch["image"][:, 2])  # gray repeated to RGB
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1 and batch["image"].min() == -1
    assert batch["label"].dtype == torch.long
    fake_encoder.check_cond(batch)
    assert fake_encoder.calls == 1


def _fake_cifar(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8), np.arange(n) % 10


def test_cifar_conversion_without_download(monkeypatch):
    monkeypatch.setattr(CIFAR10DataModule, "load_official", lambda self, train: _fake_cifar(300 if train else 50))
    dm = CIFAR10DataModule(val_size=100, channels=1, image_size=32)
    raw, _ = _fake_cifar(50)
    test = dm.dataset("test")
    assert test.images.shape == (50, 1, 32, 32)
    lum = np.round(raw @ np.array([0.299, 0.587, 0.114]))
    assert np.abs(test.images[:, 0].numpy().astype(int) - lum).max() <= 1
    assert len(dm.dataset("train")) == 200 and len(dm.dataset("val")) == 100
    assert "automobile" in dm.class_names and test.caption(1).endswith("automobile")
    small = CIFAR10DataModule(val_size=100, channels=3, image_size=16, resize_mode="resize").dataset("test")
    assert small.images.shape == (50, 3, 16, 16)
    with pytest.raises(ValueError, match="resize_mode=resize"):
        CIFAR10DataModule(val_size=100, image_size=16, resize_mode="pad").dataset("test")


def test_offline_download_failure_is_explained(monkeypatch, tmp_path):
    import torchvision.datasets

    class Offline:
        def __init__(self, *a, **k):
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: network unreachable")

    monkeypatch.setattr(torchvision.datasets, "MNIST", Offline)
    with pytest.raises(RuntimeError, match="MNIST/raw") as err:
        MNISTDataModule(data_dir=str(tmp_path)).dataset("train")
    assert str(tmp_path) in str(err.value) and "network unreachable" in str(err.value)


def test_read_idx_roundtrip_and_bad_magic(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    good = tmp_path / "x-idx3-ubyte.gz"
    header = bytes([0, 0, 0x08, 3]) + np.array([2, 3, 4], dtype=">u4").tobytes()
    good.write_bytes(gzip.compress(header + arr.tobytes()))
    assert np.array_equal(read_idx(good), arr)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(b"\x01\x02\x08\x03" + b"\x00" * 20))
    with pytest.raises(ValueError, match="magic"):
        read_idx(bad)
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(header + arr.tobytes()[:-1]))
    with pytest.raises(ValueError, match="expected"):
        read_idx(short)
