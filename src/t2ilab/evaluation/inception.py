"""torch-fidelity's InceptionV3 ('inception-v3-compat') as ONE feature pass for FID/KID/IS/PR.

Weights: ``metrics.inception_weights=PATH`` (a torch-fidelity ``.pth``), else torch-fidelity's
release file from the torch hub cache, else ONE download attempt with a short socket timeout
(a firewalled machine fails in seconds, not minutes). Every failure is a
:class:`WeightsUnavailableError` naming the file, the URL and the option. torch-fidelity itself
always gets a local path, so it never downloads on its own.

Preprocessing (identical to torch-fidelity's CLI/API): uint8 (N,3,H,W) in; gray images are
repeated to 3 channels first; torch-fidelity resizes to 299x299 inside the network with its
TF1-compatible bilinear interpolation and maps [0,255] -> [-1,1].
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from pathlib import Path
from unittest import mock

import torch
import torch_fidelity
from torch_fidelity import feature_extractor_inceptionv3 as tf_inception

from t2ilab.encoders.cache import file_sha256
from t2ilab.encoders.errors import WeightsUnavailableError
from t2ilab.evaluation.images import to_rgb

log = logging.getLogger(__name__)

FEATURES = ("2048", "logits_unbiased")
EXTRACTOR_NAME = "inception-v3-compat"
INCEPTION_URL = tf_inception.URL_INCEPTION_V3
OPTION = "metrics.inception_weights"
# torch.hub convention: the release file name carries the first hex digits of its sha256
OFFICIAL_SHA256_PREFIX = os.path.splitext(os.path.basename(INCEPTION_URL))[0].rsplit("-", 1)[-1]
PREPROCESSING = "uint8;gray->rgb repeat;torch-fidelity tf1 bilinear 299;(x-128)/128"


def _hub_file() -> Path:
    """Where torch.hub caches torch-fidelity's release weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(INCEPTION_URL)


def resolve_weights(path: str | os.PathLike | None, timeout: float | None = None, url: str = INCEPTION_URL) -> str:
    """Local path of the Inception weights; downloads once (fast-failing) when ``path`` is None.

    Args:
        path: value of metrics.inception_weights (None = torch-fidelity's release weights).
        timeout: socket timeout of the download attempt in seconds (default: $T2ILAB_DOWNLOAD_TIMEOUT or 10).
        url: where the release weights live (tests point it at a local dead server).
    """
    if path:
        if not os.path.isfile(path):
            raise WeightsUnavailableError(f"{OPTION}={path} does not exist (InceptionV3 weights for FID/KID/IS/"
                                          f"precision-recall; the torch-fidelity file is {INCEPTION_URL})")
        return str(path)
    cached = _hub_file()
    if cached.is_file():
        return str(cached)
    timeout = float(timeout if timeout is not None else os.environ.get("T2ILAB_DOWNLOAD_TIMEOUT", 10))
    cached.parent.mkdir(parents=True, exist_ok=True)
    old, t0 = socket.getdefaulttimeout(), time.perf_counter()
    socket.setdefaulttimeout(timeout)  # urllib without an explicit timeout uses this for connect+read
    try:
        log.info("downloading InceptionV3 weights %s -> %s", url, cached)
        torch.hub.download_url_to_file(url, str(cached), progress=False)
    except Exception as e:  # noqa: BLE001 - URLError, timeout, HTTP errors, disk errors
        raise WeightsUnavailableError(
            f"InceptionV3 weights (FID/KID/IS/precision-recall) are not cached at {cached} and downloading "
            f"{url} failed after {time.perf_counter() - t0:.1f}s ({type(e).__name__}: {e}). Offline: download "
            f"the file on a machine with internet access and pass {OPTION}=/path/to/{os.path.basename(url)} "
            f"(or copy it to {cached}); or set metrics.skip_unavailable=true to skip these metrics."
        ) from e
    finally:
        socket.setdefaulttimeout(old)
    return str(cached)


def make_random_weights(path: str | os.PathLike, seed: int = 0) -> str:
    """Save a RANDOMLY initialised torch-fidelity InceptionV3 state_dict (tests / offline smoke runs).

    Its numbers only exercise the mechanics (variance, caching, agreement with torch-fidelity);
    they are not comparable to published FIDs. Kaiming init keeps activations from vanishing.

    Args:
        path: destination .pth file.
        seed: init seed (the global RNG state is left untouched).
    """
    cls = tf_inception.FeatureExtractorInceptionV3
    with mock.patch.object(tf_inception, "load_state_dict_from_url", lambda *a, **k: None), \
            mock.patch.object(cls, "load_state_dict", lambda self, *a, **k: None), \
            torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = cls(EXTRACTOR_NAME, list(FEATURES))
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            elif isinstance(m, torch.nn.Linear):
                torch.nn.init.normal_(m.weight, std=m.in_features ** -0.5)
                torch.nn.init.zeros_(m.bias)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return str(path)


class InceptionExtractor:
    """One batched InceptionV3 pass -> {"2048": (N,2048) float32, "logits_unbiased": (N,1008) float32} on CPU.

    Args:
        weights: value of metrics.inception_weights (None = torch-fidelity release weights).
        device: torch device for the network.
        batch_size: images per forward pass.
        channels_last: run convolutions in channels_last memory format (faster on CPU; tiny float drift).
        cache_dir: where to memoise the weights file hash (None = recompute per process).
    """

    def __init__(self, weights: str | None = None, device: str | torch.device = "cpu", batch_size: int = 64,
                 channels_last: bool = False, cache_dir: str | os.PathLike | None = None):
        self.path = resolve_weights(weights)
        self.device, self.batch_size = torch.device(device), int(batch_size)
        try:
            net = tf_inception.FeatureExtractorInceptionV3(EXTRACTOR_NAME, list(FEATURES),
                                                           feature_extractor_weights_path=self.path)
        except Exception as e:  # noqa: BLE001 - corrupt / wrong file
            raise WeightsUnavailableError(f"could not load InceptionV3 weights from {self.path} ({OPTION}): "
                                          f"{type(e).__name__}: {e}") from e
        self.net = net.to(self.device)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.channels_last = bool(channels_last)
        payload = {"extractor": EXTRACTOR_NAME, "torch_fidelity": torch_fidelity.__version__,
                   "weights_sha256": file_sha256(self.path, cache_dir), "dtype": "float32",
                   "preprocessing": PREPROCESSING}
        self.fingerprint = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
        self.identity = payload
        self.official = payload["weights_sha256"].startswith(OFFICIAL_SHA256_PREFIX)
        if not self.official:
            log.warning("InceptionV3 weights %s are NOT torch-fidelity's release file (sha256 %s...): FID/KID/IS/"
                        "precision-recall are not comparable to published numbers", self.path,
                        payload["weights_sha256"][:12])

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 images (N,C,H,W), C in {1,3}, any device -> features dict (float32 CPU).

        Args:
            images: uint8 tensor (N, C, H, W).
        """
        if images.dtype != torch.uint8:
            raise TypeError(f"Inception expects uint8 images (use evaluation.to_uint8), got {images.dtype}")
        out: dict[str, list[torch.Tensor]] = {k: [] for k in FEATURES}
        for chunk in images.split(self.batch_size):
            x = to_rgb(chunk.to(self.device, non_blocking=True))
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            for k, v in zip(FEATURES, self.net(x)):
                out[k].append(v.float().cpu())
        return {k: (torch.cat(v) if v else torch.empty(0, 2048 if k == "2048" else 1008)) for k, v in out.items()}
