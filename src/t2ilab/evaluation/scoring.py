"""Metrics from the gathered per-sample records of all ranks (rank 0, once): FID/KID/IS/
precision-recall against the cached real statistics, CLIP score, prompt accuracy, plus the
``meta`` block (what was evaluated, with which weights, how fast) and ``skipped`` reasons."""

from __future__ import annotations

import logging
from typing import Any

import torch

from t2ilab.evaluation import fidelity as fm
from t2ilab.tracking.objective import CLASS_PREFIX, WORST_CLASS

log = logging.getLogger(__name__)

LOW_CLASSIFIER_ACCURACY = 0.5  # below this, prompt_accuracy carries a warning in meta
STAGES = ("generate", "inception", "clip", "classifier", "write")  # timed per batch by the engine


def compute(ev: Any, rec: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Metrics dict: finite floats per metric + "skipped" {metric: reason} + "meta".

    Args:
        ev: the Evaluator (settings, plan, networks, reference statistics).
        rec: records concatenated over ranks, padding (index -1) included.
    """
    keep = rec["index"] >= 0
    order = torch.argsort(rec["index"][keep])
    got = {k: v[keep][order] for k, v in rec.items() if k != "seconds"}
    s, out = ev.s, {}
    if not torch.equal(got["index"], torch.arange(s.num_samples)):
        raise RuntimeError("gathered samples do not cover 0..N-1 exactly once (rank/shard mismatch)")
    if ev.inception is not None:
        out.update(fidelity_metrics(ev, got["features"], got["logits"]))
    if ev.clip is not None:
        out["clip_score"] = float(got["clip"].mean())
        out["clip_score_std"] = float(got["clip"].std()) if len(got["clip"]) > 1 else 0.0
    if ev.classifier is not None:
        ok = torch.from_numpy(ev.plan.label_ok)
        labels = torch.from_numpy(ev.plan.labels)
        out["prompt_accuracy"] = float((got["pred"][ok] == labels[ok]).float().mean())
        out["prompt_accuracy_n"] = int(ok.sum())
        out["classifier_heldout_accuracy"] = ev.classifier.heldout_accuracy
        out.update(per_class(got["pred"][ok], labels[ok], class_names(ev)))
    if "clf_features" in got and ev.classifier_real is not None:
        out["classifier_fd"] = fm.frechet_distance(fm.frechet_stats(got["clf_features"]), ev.classifier_real)
    out["nonfinite_fraction"] = float(got["nonfinite"].mean())
    if out["nonfinite_fraction"] > 0:
        log.error("%.2g%% of generated pixels are NaN/inf (mapped to 0)", 100 * out["nonfinite_fraction"])
    out["skipped"] = {m: r for m, r in ev.skipped.items() if getattr(s, m, False)}
    out["meta"] = meta(ev, rec["seconds"].reshape(-1, len(STAGES)).amax(0))
    return out


TOP_CONFUSIONS = 5


def class_names(ev: Any) -> list[str]:
    """The datamodule's class names (``class_<i>`` where it has none), as many as the classifier's classes."""
    names = getattr(ev.dm, "class_names", None) or []
    return [str(names[i]) if i < len(names) else f"class_{i}" for i in range(ev.classifier.shape["num_classes"])]


def per_class(pred: torch.Tensor, labels: torch.Tensor, names: list[str]) -> dict[str, Any]:
    """Per-class truth of prompt accuracy over the label-stating prompts.

    Returns ``class_accuracy/<name>`` (share of the class's samples the reference classifier reads as that
    class; only classes that were prompted), ``prompt_accuracy_worst`` (the lowest of them),
    ``confusion`` (``{"classes": names, "counts": [[prompted i drawn as j]]}``) and ``confusions`` (the
    ``TOP_CONFUSIONS`` most frequent off-diagonal pairs: prompted, drawn_as, count, fraction of the class).
    """
    k = len(names)
    counts = torch.bincount(labels.long() * k + pred.long(), minlength=k * k).reshape(k, k)
    totals = counts.sum(1)
    out: dict[str, Any] = {}
    acc = {i: int(counts[i, i]) / int(totals[i]) for i in range(k) if totals[i] > 0}
    for i, a in acc.items():
        out[CLASS_PREFIX + names[i]] = a
    if acc:
        out[WORST_CLASS] = min(acc.values())
    off = counts.clone().fill_diagonal_(0)
    pairs = [(int(off[i, j]), i, j) for i in range(k) for j in range(k) if off[i, j] > 0]
    out["confusion"] = {"classes": list(names), "counts": counts.tolist()}
    out["confusions"] = [{"prompted": names[i], "drawn_as": names[j], "count": c, "fraction": c / int(totals[i])}
                         for c, i, j in sorted(pairs, key=lambda p: (-p[0] / int(totals[p[1]]), p[1], p[2]))
                         [:TOP_CONFUSIONS]]
    return out


def fidelity_metrics(ev: Any, feats: torch.Tensor, logits: torch.Tensor) -> dict[str, float]:
    """FID / KID / IS / precision-recall of generated features vs the cached real ones, on the
    evaluation device.

    Args:
        ev: the Evaluator.
        feats: (N, 2048) generated pool features.
        logits: (N, 1008) generated unbiased logits.
    """
    s, ref, out = ev.s, ev.reference, {}
    dev = ev.device or torch.device("cpu")
    feats = feats.to(dev)
    if s.fid:
        out["fid"] = fm.frechet_distance(fm.frechet_stats(feats), ref.frechet())
    if s.kid:
        out.update(fm.kid(feats, ref.features(), s.kid_subset_size, s.kid_subsets))
    if s.isc:
        out.update(fm.inception_score(logits, min(s.isc_splits, len(logits))))
        out["isc_real"] = ref.isc_real
    if s.prc:
        out.update(fm.precision_recall(feats, ref.features().to(dev), s.prc_k, ref.radii(s.prc_k, dev)))
    return out


def meta(ev: Any, stage_seconds: torch.Tensor) -> dict[str, Any]:
    """What was evaluated and how: settings, weights fingerprints, warnings, per-stage timings.

    Args:
        ev: the Evaluator.
        stage_seconds: (len(STAGES),) seconds of the slowest rank per stage.
    """
    s, n = ev.s, ev.s.num_samples
    seconds = {k: float(v) for k, v in zip(STAGES, stage_seconds.tolist())}
    busy = sum(seconds.values())
    out: dict[str, Any] = {
        "num_samples": n, "split": s.split, "seed": s.seed, "batch_size": s.batch_size,
        "sampling": dict(ev.sampling_used), "device": str(ev.device), "stage_seconds": seconds,
        "images_per_second": n / max(busy, 1e-9),
        "generate_images_per_second": n / max(seconds["generate"], 1e-9), "warnings": [],
        "postprocess": ev.postprocess.describe() if getattr(ev, "postprocess", None) else [],
    }
    if ev.reference is not None:
        out.update(num_reference=ev.reference.description["num_reference"], reference_key=ev.reference.key,
                   inception=ev.inception.fingerprint, inception_weights=ev.inception.path,
                   inception_official_weights=bool(getattr(ev.inception, "official", False)))
        if not out["inception_official_weights"]:
            out["warnings"].append("Inception weights are not torch-fidelity's release file: FID/KID/IS/PR are "
                                   "not comparable to published numbers")
    if ev.clip is not None:
        out.update(clip_model=ev.clip.name, clip_fingerprint=ev.clip.fingerprint)
        if ev.clip.random_init:
            out["warnings"].append("CLIP score computed with a randomly initialised CLIP: meaningless")
    if ev.classifier is not None:
        out["classifier_key"] = ev.classifier.key
        out["classifier_weights"] = ev.classifier.weights_digest  # compare metrics only at the same digest
        if ev.classifier.heldout_accuracy < LOW_CLASSIFIER_ACCURACY:
            out["warnings"].append(f"reference classifier held-out accuracy {ev.classifier.heldout_accuracy:.2f} < "
                                   f"{LOW_CLASSIFIER_ACCURACY}: prompt accuracy is weakly informative (more "
                                   "metrics.classifier.epochs / training data)")
    return out
