"""Reference classifier for prompt accuracy: a small CNN trained on the REAL training split and
cached on disk (``<cache_dir>/reference_classifiers/<key>.pt``).

The key hashes the dataset identity, resolution, channels, number of classes, the classifier
hyper-parameters and the seed. Its held-out accuracy (on the evaluation split) is stored with it:
prompt accuracy of generated images is only meaningful relative to that ceiling.
Fashion-MNIST at 32px, defaults (20k images x 2 epochs): ~10 s on 2 CPU cores, 88.4% held-out.
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
import torch.nn.functional as F
from torch import nn

from t2ilab.evaluation.images import stack_images
from t2ilab.utils.io import atomic_torch_save

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def build_net(channels: int, num_classes: int, image_size: int, width: int = 32) -> nn.Sequential:
    """Three stride-2 conv blocks + linear head; input uint8-scaled to [-1, 1] by the caller.

    Args:
        channels: input channels.
        num_classes: output classes.
        image_size: input side length (the head size depends on it).
        width: channels of the first block (doubled per block).
    """
    layers: list[nn.Module] = []
    c, side = channels, image_size
    for w in (width, 2 * width, 4 * width):
        layers += [nn.Conv2d(c, w, 3, stride=2, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        c, side = w, (side + 1) // 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Dropout(0.2), nn.Linear(c * side * side, num_classes))


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """A short sha256 of a network's weights (names and float32 values): two reference classifiers with the
    same cache key trained on different machines differ in their weights (CPU numerics), and so do the
    prompt accuracy and classifier_fd they give; metrics are comparable only at the same digest."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        h.update(name.encode())
        h.update(state_dict[name].detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _scale(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(127.5).sub_(1.0)


class ReferenceClassifier:
    """Train-once, cached classifier of real images.

    Args:
        cache_dir: root cache folder.
        identity: dataset identity (see reference.dataset_identity) of the training split.
        image_size: image side length.
        channels: image channels.
        num_classes: number of labels.
        epochs: training epochs.
        max_train: at most this many training images (fixed random subset).
        batch_size: training batch size.
        lr: peak AdamW learning rate (one-cycle schedule).
        width: network width.
        seed: init / subset / shuffling seed.
        device: training and inference device.
    """

    def __init__(self, cache_dir: str | os.PathLike, identity: dict[str, Any], image_size: int, channels: int,
                 num_classes: int, epochs: int = 2, max_train: int | None = 20000, batch_size: int = 256,
                 lr: float = 3e-3, width: int = 32, seed: int = 0, device: str | torch.device = "cpu"):
        self.hparams = {"epochs": int(epochs), "max_train": None if max_train is None else int(max_train),
                        "batch_size": int(batch_size), "lr": float(lr), "width": int(width), "seed": int(seed)}
        self.shape = {"image_size": int(image_size), "channels": int(channels), "num_classes": int(num_classes)}
        payload = {"format": FORMAT_VERSION, "dataset": identity, **self.shape, **self.hparams}
        self.key = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]
        self.path = Path(cache_dir).expanduser() / "reference_classifiers" / f"{self.key}.pt"
        self.payload, self.device = payload, torch.device(device)
        self.net: nn.Module | None = None
        self.heldout_accuracy: float | None = None
        self.weights_digest: str | None = None

    def load_or_train(self, train_ds: Callable[[], Any], heldout_ds: Any) -> "ReferenceClassifier":
        """Load the cached network, or train it on ``train_ds()`` and cache it (with held-out accuracy).

        Args:
            train_ds: zero-argument callable returning the real training split (only called on a miss).
            heldout_ds: CaptionedImageDataset with labels (evaluation split) for the held-out accuracy.
        """
        net = build_net(self.shape["channels"], self.shape["num_classes"], self.shape["image_size"],
                        self.hparams["width"])
        if self.path.is_file():
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            net.load_state_dict(state["state_dict"])
            self.heldout_accuracy = float(state["heldout_accuracy"])
            log.info("reference classifier: cache hit %s (held-out accuracy %.3f)", self.path, self.heldout_accuracy)
        else:
            self._train(net, train_ds())
            x, y = _stack(heldout_ds, np.arange(len(heldout_ds)))
            self.net = net.to(self.device).eval()
            self.heldout_accuracy = float((self.predict(x) == y).float().mean())
            atomic_torch_save({"state_dict": net.state_dict(), "heldout_accuracy": self.heldout_accuracy,
                               "meta": json.dumps(self.payload, default=str)}, self.path)
            log.info("reference classifier: held-out accuracy %.3f -> %s", self.heldout_accuracy, self.path)
        self.net = net.to(self.device).eval()
        self.weights_digest = weights_digest(net.state_dict())
        return self

    def _train(self, net: nn.Module, ds: Any) -> None:
        hp, t0 = self.hparams, time.perf_counter()
        rng = np.random.default_rng(hp["seed"])
        idx = rng.permutation(len(ds))[:hp["max_train"]] if hp["max_train"] else np.arange(len(ds))
        x, y = _stack(ds, np.sort(idx))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(hp["seed"])
            net.apply(lambda m: m.reset_parameters() if hasattr(m, "reset_parameters") else None)
            net.to(self.device).train()
            bs = min(hp["batch_size"], len(x))
            steps_per_epoch = max(1, len(x) // bs)
            opt = torch.optim.AdamW(net.parameters(), lr=hp["lr"], weight_decay=1e-4)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, hp["lr"], total_steps=hp["epochs"] * steps_per_epoch)
            for _ in range(hp["epochs"]):
                perm = torch.from_numpy(rng.permutation(len(x)))
                for s in range(steps_per_epoch):
                    b = perm[s * bs:(s + 1) * bs]
                    loss = F.cross_entropy(net(_scale(x[b].to(self.device))), y[b].to(self.device))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
        log.info("reference classifier: trained on %d real images x %d epochs in %.1fs (last loss %.3f)",
                 len(x), hp["epochs"], time.perf_counter() - t0, float(loss.detach()))

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """uint8 images (N,C,H,W) -> predicted labels (N,) long on CPU."""
        return self.classify(images, batch_size)[0]

    @torch.no_grad()
    def classify(self, images: torch.Tensor, batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (N,C,H,W) -> (predicted labels (N,) long, penultimate features (N,F) float),
        both on CPU. The features (the flattened conv trunk, before dropout and the linear head)
        feed ``classifier_fd``, a Frechet distance in this in-domain feature space.

        Args:
            images: uint8 tensor at the classifier's resolution/channels.
            batch_size: images per forward pass.
        """
        assert self.net is not None, "call load_or_train first"
        want = (self.shape["channels"], self.shape["image_size"], self.shape["image_size"])
        if tuple(images.shape[1:]) != want:
            raise ValueError(f"reference classifier expects images {want}, got {tuple(images.shape[1:])}")
        trunk, head = self.net[:-2], self.net[-1]  # [..., Flatten] | Dropout (identity in eval) | Linear
        preds, feats = [], []
        for c in images.split(batch_size):
            f = trunk(_scale(c.to(self.device)))
            preds.append(head(f).argmax(1).cpu())
            feats.append(f.float().cpu())
        if not preds:
            return torch.empty(0, dtype=torch.long), torch.empty(0, self.feature_dim)
        return torch.cat(preds), torch.cat(feats)

    def real_frechet_stats(self, ds: Any, num_reference: int | None, seed: int) -> dict[str, torch.Tensor]:
        """Frechet statistics of the real split ``ds`` (or its seeded ``num_reference`` subset) in
        this classifier's feature space, for ``classifier_fd``; cached beside the classifier (its
        key pins the split).

        Args:
            ds: the real evaluation split.
            num_reference: subset size (None or >= len(ds) = all images).
            seed: subset seed.
        """
        from t2ilab.evaluation.fidelity import frechet_stats

        n = num_reference if num_reference is not None and num_reference < len(ds) else None
        path = self.path.with_name(f"{self.key}_fd_{n or 'all'}_s{seed}.pt")
        if path.is_file():
            return torch.load(path, map_location="cpu", weights_only=True)
        idx = np.arange(len(ds)) if n is None else np.sort(np.random.default_rng(seed).permutation(len(ds))[:n])
        stats = frechet_stats(self.classify(stack_images(ds, idx))[1])
        atomic_torch_save(stats, path)
        return stats

    @property
    def feature_dim(self) -> int:
        """Size of the penultimate features returned by ``classify``."""
        assert self.net is not None, "call load_or_train first"
        return int(self.net[-1].in_features)


def _stack(ds: Any, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images, labels) of dataset items ``idx``."""
    x = stack_images(ds, idx)
    y = torch.tensor([ds.label(int(i)) for i in idx], dtype=torch.long)
    return x, y
