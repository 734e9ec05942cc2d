"""The value a training run hands to a sweeper (``optimized_metric``), and the checks that make it
mean the same thing for every family.

``optimized_metric`` names an ``eval/*`` metric of the evaluation callback (``callbacks=eval``), e.g.
``eval/classifier_fd``: the Frechet distance of generated vs. real images in an in-domain reference
classifier's feature space, computed by one engine with fixed prompts and noise (``metrics.seed``),
the same for diffusion, GAN and VAE. Losses (``val/loss``) are not comparable across families (ε-MSE,
hinge, −ELBO) and are not offered. ``null`` = the run returns nothing.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

PREFIX = "eval/"
# eval/<metric> -> the `metrics.<flag>` that turns it on, and whether lower is better
EVAL_METRICS: dict[str, tuple[str, bool]] = {
    "fid": ("fid", True), "kid_mean": ("kid", True), "kid_std": ("kid", True),
    "isc_mean": ("isc", False), "isc_std": ("isc", False),
    "precision": ("prc", False), "recall": ("prc", False), "prc_f_score": ("prc", False),
    "clip_score": ("clip_score", False), "prompt_accuracy": ("prompt_accuracy", False),
    "prompt_accuracy_worst": ("prompt_accuracy", False),  # WORST_CLASS: the lowest per-class accuracy
    "classifier_fd": ("classifier_fd", True),
}


CLASS_PREFIX = "class_accuracy/"  # per-class prompt accuracy: class_accuracy/<class name> (evaluation/scoring.per_class)
WORST_CLASS = "prompt_accuracy_worst"  # the lowest of them


# logged names that are diagnostics, not quality: no best value to summarise
_NO_GOAL = ("_n", "_std", "nonfinite_fraction", "heldout_accuracy", "lr-", "epoch", "global_step", "retrieval_chance")


def metric_goal(name: str) -> str | None:
    """``min`` / ``max`` for a logged metric whose best value means something (losses, FD, FID/KID: min;
    accuracies, CLIP score, IS, precision/recall: max); None for diagnostics and bookkeeping. W&B summarises
    each metric by it (``define_metric``), so its runs table sorts by the best value, not the last."""
    leaf = name.rsplit("/", 1)[-1]
    if any(tag in name for tag in _NO_GOAL):
        return None
    if name.startswith(CLASS_PREFIX) or "/" + CLASS_PREFIX in name:  # per class: the leaf is the class name
        return "max"
    if leaf in EVAL_METRICS:
        return "min" if EVAL_METRICS[leaf][1] else "max"
    if "loss" in leaf or leaf in ("nll", "kl", "recon") or leaf.endswith("_fd"):
        return "min"
    if "accuracy" in leaf or leaf.endswith("clip_score"):
        return "max"
    return None


class ObjectiveError(RuntimeError):
    """``optimized_metric`` cannot be produced / was not produced by the run."""


def _producer(name: str) -> str:
    metric = name[len(PREFIX):]
    flag = EVAL_METRICS[metric][0] if metric in EVAL_METRICS else metric
    return (f"it is written by the evaluation callback (callbacks=eval, with "
            f"callbacks.evaluation.eval_on_train_end=true and metrics.{flag}=true; hparams_search=* configs "
            f"turn this on)")


def check_objective(cfg: Any) -> None:
    """Before any work: ``optimized_metric`` is an ``eval/*`` metric the configured evaluation callback
    will produce at the end of training, and the sweeper's direction fits it (when there is one).

    Args:
        cfg: a composed train config (``hydra`` node optional).
    """
    name = cfg.get("optimized_metric")
    if not name:
        raise ObjectiveError("optimized_metric is null: a sweep needs the metric train() returns, "
                             "e.g. optimized_metric=eval/classifier_fd")
    metric = str(name)[len(PREFIX):] if str(name).startswith(PREFIX) else None
    if metric not in EVAL_METRICS:
        raise ObjectiveError(f"optimized_metric={name!r} is not an evaluation metric; use one of "
                             + ", ".join(PREFIX + m for m in EVAL_METRICS)
                             + " (losses differ in meaning across families)")
    flag, lower_better = EVAL_METRICS[metric]
    ev = (cfg.get("callbacks") or {}).get("evaluation")
    problems = []
    if not ev or not ev.get("_target_"):  # hparams_search's callbacks.evaluation keys alone are no callback
        problems.append("there is no evaluation callback (callbacks=eval)")
    elif not ev.get("eval_on_train_end"):
        problems.append("callbacks.evaluation.eval_on_train_end is false (the value must be of the final model)")
    if not (cfg.get("metrics") or {}).get(flag):
        problems.append(f"metrics.{flag} is false")
    if problems:
        raise ObjectiveError(f"optimized_metric={name} will not be produced: " + "; ".join(problems)
                             + ". " + _producer(str(name)))
    try:
        direction = cfg.hydra.sweeper.get("direction")
    except Exception:  # noqa: BLE001 - no hydra node / sweeper without a direction
        direction = None
    want = "minimize" if lower_better else "maximize"
    if direction in ("minimize", "maximize") and direction != want:
        raise ObjectiveError(f"hydra.sweeper.direction={direction} but {name} is "
                             f"{'lower' if lower_better else 'higher'} is better: use direction={want}")


def check_trial_config(cfg: Any) -> None:
    """``hydra.sweeper.config_check`` of the hparams_search configs: the typed-schema check of
    ``t2ilab.train`` plus :func:`check_objective`, run on composed trial configs before any job."""
    from t2ilab.utils.schema import validate

    validate(cfg)
    check_objective(cfg)


def objective_value(cfg: Any, metrics: Mapping[str, Any]) -> float | None:
    """The value of ``cfg.optimized_metric`` in ``metrics`` (``trainer.callback_metrics``); None when
    ``optimized_metric`` is null. Raises ObjectiveError when it is set but missing or not finite, so
    a sweeper records a failed trial instead of receiving None.

    Args:
        cfg: the run's config.
        metrics: metric name -> value (tensor or number).
    """
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        have = ", ".join(sorted(str(k) for k in metrics)) or "none"
        raise ObjectiveError(f"optimized_metric={name} was not produced by this run; "
                             f"{_producer(str(name)) if str(name).startswith(PREFIX) else 'no callback logged it'}. "
                             f"Metrics this run has: {have}")
    value = float(metrics[name])
    if not math.isfinite(value):
        raise ObjectiveError(f"optimized_metric={name} is {value} (not finite)")
    return value
