"""Shared fixtures for the evaluation tests: a random-weight Inception saved like a real weights
file, a cheap stand-in feature extractor, small datamodules with the tiny random CLIP, stand-in
generators (anything with ``generate(cond, *, generator=None, **kw) -> [0,1] images``)."""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from t2ilab.evaluation.images import to_rgb

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def tiny_clip_cfg(**overrides) -> dict:
    """conf/encoder/clip_tiny.yaml as OpenCLIPEncoder kwargs (no Hydra, no disk cache)."""
    cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "encoder" / "clip_tiny.yaml"), resolve=False)
    cfg.pop("_target_")
    cfg.update(cache_dir=None, device="cpu", **overrides)
    return cfg


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory) -> str:
    """A randomly initialised torch-fidelity InceptionV3 state_dict on disk (loading patched out at build)."""
    from t2ilab.evaluation.inception import make_random_weights

    return make_random_weights(tmp_path_factory.mktemp("inception") / "inception-random.pth", seed=0)


@pytest.fixture(scope="session")
def extractor(inception_weights):
    """InceptionExtractor loaded through the normal metrics.inception_weights path."""
    from t2ilab.evaluation.inception import InceptionExtractor

    return InceptionExtractor(inception_weights, device="cpu", batch_size=64)


class StandInExtractor:
    """Cheap deterministic feature extractor with the InceptionExtractor interface: fixed random
    projections of 8x8-pooled pixels (features vary smoothly with the image content)."""

    def __init__(self, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn(192, 2048, generator=g) / 8
        self.wl = torch.randn(192, 1008, generator=g)
        self.fingerprint, self.identity, self.path = f"standin-{seed}", {"standin": seed}, "standin"
        self.images_seen = 0

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        self.images_seen += len(images)
        x = F.adaptive_avg_pool2d(to_rgb(images).float().cpu() / 255, 8).flatten(1)
        return {"2048": torch.relu(x @ self.w), "logits_unbiased": x @ self.wl}


@pytest.fixture
def standin():
    """Factory of StandInExtractor(seed)."""
    return StandInExtractor


class NoiseGenerator(torch.nn.Module):
    """Stand-in generative model: image = mix of a cond-dependent pattern and generator noise."""

    def __init__(self, dim: int, channels: int = 3, size: int = 32, noise: float = 0.5):
        super().__init__()
        g = torch.Generator().manual_seed(123)
        self.proj = torch.nn.Parameter(torch.randn(dim, channels * 4 * 4, generator=g), requires_grad=False)
        self.shape, self.noise = (channels, size, size), noise
        self.calls = 0

    def generate(self, cond, *, generator=None, **sampling):
        self.calls += 1
        n, (c, h, w) = cond.shape[0], self.shape
        pattern = torch.sigmoid(cond @ self.proj).view(n, c, 4, 4)
        pattern = F.interpolate(pattern, size=(h, w), mode="nearest")
        if isinstance(generator, (list, tuple)):  # one generator per row, as the generation path passes
            eps = torch.stack([torch.rand(c, h, w, generator=g) for g in generator]).to(cond.device)
        else:
            eps = torch.rand(n, c, h, w, generator=generator, device=cond.device)
        return (1 - self.noise) * pattern + self.noise * eps


@pytest.fixture
def noise_model():
    """Factory of NoiseGenerator(dim, channels, size, noise)."""
    return NoiseGenerator


@pytest.fixture(scope="session")
def tiny_encoder():
    """The tiny random open_clip encoder (conditioning for the stand-in models)."""
    from t2ilab.encoders.open_clip_encoder import OpenCLIPEncoder

    return OpenCLIPEncoder(**tiny_clip_cfg())


@pytest.fixture(scope="session")
def shapes_dm(tiny_encoder):
    """Small procedural shapes datamodule (RGB 32px, labels, 96 val images)."""
    from t2ilab.data.shapes import ShapesDataModule

    return ShapesDataModule(seed=0, num_train=256, num_val=96, num_test=32, image_size=32, channels=3,
                            text_encoder=tiny_encoder)


@pytest.fixture(scope="session")
def fmnist_dm(tiny_encoder, tmp_path_factory):
    """Fashion-MNIST (1 channel, 32px, 1000 val images, 4000 train images) from the Debian package."""
    from t2ilab.data.class_prompts import FASHION_MNIST_DIR, FashionMNISTDataModule

    if not (Path(FASHION_MNIST_DIR) / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not installed at {FASHION_MNIST_DIR}")
    return FashionMNISTDataModule(data_dir=str(tmp_path_factory.mktemp("data")), val_size=1000, limit_train=4000,
                                  image_size=32, channels=1, text_encoder=tiny_encoder)


def metrics_cfg(**overrides) -> dict:
    """Small, offline evaluation settings (tiny random CLIP; quick classifier)."""
    cfg = {"num_samples": 48, "batch_size": 16, "kid_subset_size": 16, "isc_splits": 4, "table_size": 8,
           "clip": {"model_name": "clip-tiny", "pretrained": None, "random_init": True,
                    "model_cfg": tiny_clip_cfg()["model_cfg"]},
           "classifier": {"epochs": 2, "max_train": 4000, "batch_size": 128}}
    cfg.update(overrides)
    return cfg


@pytest.fixture(name="metrics_cfg")
def metrics_cfg_fixture():
    """The ``metrics_cfg(**overrides)`` builder above."""
    return metrics_cfg


@contextlib.contextmanager
def numpy_blas_threads(n: int = 1):
    """Limit numpy's bundled OpenBLAS to ``n`` threads inside (no-op if the symbol is not found).

    Why: with torch's OpenMP pool alive in the same process, OpenBLAS with 2 threads on a 2-core
    machine takes ~24 s for torch-fidelity's 2048x2048 ``eigvals`` instead of ~2 s with 1 thread.
    """
    import numpy as np

    libs = glob.glob(os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "libscipy_openblas*"))
    setter = getter = None
    if libs:
        lib = ctypes.CDLL(libs[0])
        setter = getattr(lib, "scipy_openblas_set_num_threads64_", None)
        getter = getattr(lib, "scipy_openblas_get_num_threads64_", None)
    old = getter() if getter else None
    if setter:
        setter(n)
    try:
        yield
    finally:
        if setter and old:
            setter(old)


@pytest.fixture(scope="session")
def blas_threads():
    """The ``numpy_blas_threads(n)`` context manager above."""
    return numpy_blas_threads


@pytest.fixture
def replay_model():
    """Factory of RealImageReplay(datamodule, split): a stand-in generator returning real images."""
    from t2ilab.evaluation.replay import RealImageReplay

    return RealImageReplay
