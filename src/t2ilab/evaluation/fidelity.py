"""Metrics from features: FID and KID in torch (same definitions, subset draws and numbers as
torch-fidelity, to <= 1e-4 relative; tested), IS through torch-fidelity's own function,
precision/recall (Kynkäänniemi et al. 2019) in batched torch, and the CLIP score formula.
Nothing here touches images or networks.

Why FID/KID are not torch-fidelity's functions: its FID takes ``eigvals`` of the non-symmetric
2048x2048 product sigma1 @ sigma2 in numpy (8-24 s on a 2-core CPU, and on the CPU even when a
GPU is there), its KID loops 100 numpy subsets on the CPU. Here FID uses an exact factorisation
(see ``frechet_distance``) and both run on the evaluation device.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch_fidelity.metric_isc import isc_features_to_metric

log = logging.getLogger(__name__)

RNG_SEED = 2020  # torch-fidelity's default rng_seed (KID subsets, IS shuffling)


def frechet_stats(features: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gaussian statistics of features as {"mu": (D,), "factor": (D, k)}, float64, with
    ``factor @ factor.T`` = the unbiased covariance (torch-fidelity's ``np.cov``) and k = min(N, D):
    the centred features / sqrt(N-1) when N <= D (exact, no decomposition), else V sqrt(w) from
    the eigendecomposition of the covariance.

    Args:
        features: (N, D) tensor, N >= 2 (any device; computed there).
    """
    x = features.detach().double()
    n, d = x.shape
    if n < 2:
        raise ValueError(f"FID needs at least 2 samples, got {n}")
    mu = x.mean(0)
    xc = x - mu
    if n <= d:
        return {"mu": mu, "factor": xc.T.div_(math.sqrt(n - 1))}
    w, v = torch.linalg.eigh(xc.T @ xc / (n - 1))
    return {"mu": mu, "factor": v * w.clamp_(min=0).sqrt_()}


def frechet_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """FID = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^1/2).

    With S = F F^T: the eigenvalues of S_a S_b are the squared singular values of F_a^T F_b, so
    tr((S_a S_b)^1/2) is the nuclear norm of that (k_a x k_b) matrix — exact, symmetric, no
    complex round-off, and tr(S) = |F|^2.

    Args:
        a: ``frechet_stats`` of the generated features.
        b: ``frechet_stats`` of the real features (moved to a's device).
    """
    fa, fb = a["factor"], b["factor"].to(a["factor"])
    diff = a["mu"] - b["mu"].to(a["mu"])
    cross = torch.linalg.svdvals(fa.T @ fb).sum()
    return float(diff @ diff + fa.square().sum() + fb.square().sum() - 2 * cross)


def kid_subsets_indices(n_gen: int, n_real: int, size: int, subsets: int, seed: int = RNG_SEED) -> tuple:
    """torch-fidelity's subset draws: per subset ``choice(n_gen)`` then ``choice(n_real)``
    (without replacement) from one ``RandomState(seed)``. Returns two (subsets, size) long tensors."""
    rng = np.random.RandomState(seed)
    pairs = [(rng.choice(n_gen, size, replace=False), rng.choice(n_real, size, replace=False))
             for _ in range(subsets)]
    return (torch.from_numpy(np.stack([p[0] for p in pairs])), torch.from_numpy(np.stack([p[1] for p in pairs])))


def _mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD^2 with the cubic polynomial kernel (x.y/D + 1)^3, batched over subsets (S, m, D)."""
    m, gamma = x.shape[1], 1.0 / x.shape[2]

    def kernel(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return (torch.bmm(p, q.transpose(1, 2)).double() * gamma + 1.0) ** 3

    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    diag = kxx.diagonal(dim1=1, dim2=2).sum(1) + kyy.diagonal(dim1=1, dim2=2).sum(1)
    within = (kxx.sum((1, 2)) + kyy.sum((1, 2)) - diag) / (m * (m - 1))
    return within - 2 * kxy.sum((1, 2)) / (m * m)


def kid(features_gen: torch.Tensor, features_real: torch.Tensor, subset_size: int = 1000,
        subsets: int = 100, chunk: int = 8) -> dict[str, float]:
    """Kernel Inception Distance (cubic polynomial kernel, unbiased MMD^2 over random subsets),
    computed on the features' device, ``chunk`` subsets per batched matmul.

    ``subset_size`` is clamped to the smaller set (and logged): torch-fidelity would refuse instead.

    Args:
        features_gen: generated features (N, D).
        features_real: real features (M, D), moved to features_gen's device.
        subset_size: samples per subset (torch-fidelity default 1000).
        subsets: number of subsets averaged (torch-fidelity default 100).
        chunk: subsets computed together (memory: 3 x chunk x size^2 float64).
    """
    size = min(int(subset_size), len(features_gen), len(features_real))
    if size < int(subset_size):
        log.warning("kid_subset_size=%d > available samples: using %d", subset_size, size)
    if size < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(features_gen)} / {len(features_real)}")
    x, y = features_gen.float(), features_real.to(features_gen.device).float()
    ix, iy = kid_subsets_indices(len(x), len(y), size, int(subsets))
    ix, iy = ix.to(x.device), iy.to(x.device)
    mmds = torch.cat([_mmd2_unbiased(x[a], y[b]) for a, b in zip(ix.split(chunk), iy.split(chunk))])
    return {"kid_mean": float(mmds.mean()), "kid_std": float(mmds.std(unbiased=False)), "kid_subset_size": size}


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
