"""Metrics from features: FID / KID / IS through torch-fidelity's own functions (numbers identical
to ``torch_fidelity.calculate_metrics``), precision/recall (Kynkäänniemi et al. 2019) in batched
torch, and the CLIP score formula. Nothing here touches images or networks.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric

log = logging.getLogger(__name__)

RNG_SEED = 2020  # torch-fidelity's default rng_seed (KID subsets, IS shuffling)


def fid_statistics(features: torch.Tensor) -> dict[str, np.ndarray]:
    """{"mu": float32 (D,), "sigma": float64 (D,D)} exactly as torch-fidelity computes them.

    Args:
        features: float32 CPU tensor (N, D).
    """
    return fid_features_to_statistics(features.cpu())


def fid_from_statistics(stats_gen: dict[str, np.ndarray], stats_real: dict[str, np.ndarray]) -> float:
    """Fréchet distance between two Gaussians (torch-fidelity's eigenvalue formulation).

    Args:
        stats_gen: mu/sigma of generated features.
        stats_real: mu/sigma of real features.
    """
    return float(fid_statistics_to_metric(stats_gen, stats_real, verbose=False)["frechet_inception_distance"])


def kid(features_gen: torch.Tensor, features_real: torch.Tensor, subset_size: int = 1000,
        subsets: int = 100) -> dict[str, float]:
    """Kernel Inception Distance (cubic polynomial kernel, unbiased MMD^2 over random subsets).

    ``subset_size`` is clamped to the smaller set (and logged): torch-fidelity would refuse instead.

    Args:
        features_gen: generated features (N, D).
        features_real: real features (M, D).
        subset_size: samples per subset (torch-fidelity default 1000).
        subsets: number of subsets averaged (torch-fidelity default 100).
    """
    size = min(int(subset_size), len(features_gen), len(features_real))
    if size < int(subset_size):
        log.warning("kid_subset_size=%d > available samples: using %d", subset_size, size)
    if size < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(features_gen)} / {len(features_real)}")
    out = kid_features_to_metric(features_gen.cpu(), features_real.cpu(), kid_subset_size=size,
                                 kid_subsets=int(subsets), rng_seed=RNG_SEED, verbose=False)
    return {"kid_mean": out["kernel_inception_distance_mean"], "kid_std": out["kernel_inception_distance_std"],
            "kid_subset_size": size}


def inception_score(logits: torch.Tensor, splits: int = 10) -> dict[str, float]:
    """Inception Score from unbiased logits (torch-fidelity: shuffled with its rng_seed, ``splits`` chunks).

    Args:
        logits: (N, 1008) 'logits_unbiased' of the generated images.
        splits: number of chunks (torch-fidelity default 10).
    """
    out = isc_features_to_metric(logits.cpu(), splits=int(splits), shuffle=True, rng_seed=RNG_SEED)
    return {"isc_mean": out["inception_score_mean"], "isc_std": out["inception_score_std"]}


def knn_radii(features: torch.Tensor, k: int = 3, block: int = 4096) -> torch.Tensor:
    """Distance of every row to its k-th nearest OTHER row (the point itself is neighbour 0).

    Args:
        features: (N, D) tensor (any device; computed there in row blocks).
        k: neighbourhood size (Kynkäänniemi et al.: 3).
        block: rows per torch.cdist block (memory: block x N floats).
    """
    if len(features) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples per set, got {len(features)}")
    return torch.cat([torch.cdist(q, features).kthvalue(k + 1, dim=1).values for q in features.split(block)])


def _covered(queries: torch.Tensor, support: torch.Tensor, radii: torch.Tensor, block: int) -> torch.Tensor:
    """Fraction of ``queries`` inside at least one ball (support[j], radii[j])."""
    hits = [(torch.cdist(q, support) <= radii.unsqueeze(0)).any(dim=1) for q in queries.split(block)]
    return torch.cat(hits).float().mean()


def precision_recall(features_gen: torch.Tensor, features_real: torch.Tensor, k: int = 3,
                     radii_real: torch.Tensor | None = None, block: int = 4096) -> dict[str, float]:
    """Improved precision/recall: precision = share of generated samples inside the real manifold
    (union of k-NN balls of real samples), recall = share of real samples inside the generated one.
    Same convention (``<=``, k-th neighbour excluding self) as torch-fidelity's ``prc``.

    Args:
        features_gen: generated features (N, D).
        features_real: real features (M, D), same device as features_gen.
        k: neighbourhood size.
        radii_real: cached ``knn_radii(features_real, k)`` (computed when None).
        block: rows per cdist block.
    """
    radii_real = knn_radii(features_real, k, block) if radii_real is None else radii_real.to(features_real)
    radii_gen = knn_radii(features_gen, k, block)
    precision = float(_covered(features_gen, features_real, radii_real, block))
    recall = float(_covered(features_real, features_gen, radii_gen, block))
    f_score = 2 * precision * recall / max(1e-5, precision + recall)
    return {"precision": precision, "recall": recall, "prc_f_score": f_score}


def clip_scores(image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """Per-pair CLIP score 100 * max(cos(image, text), 0) (Hessel et al. with torchmetrics' scale 100).

    Args:
        image_emb: (N, D) image embeddings.
        text_emb: (N, D) embeddings of the matching prompts.
    """
    cos = torch.nn.functional.cosine_similarity(image_emb.float(), text_emb.float(), dim=-1)
    return 100.0 * cos.clamp(min=0)
