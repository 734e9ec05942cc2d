"""Where evaluation results go: metrics.json, Lightning loggers (history), W&B summary and a W&B
table of sample images with their prompts and per-image CLIP scores. Every sink is optional."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable

from t2ilab.tracking.objective import CLASS_PREFIX
from t2ilab.utils.io import atomic_write

log = logging.getLogger(__name__)

PREFIX = "eval/"


def scalar_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The numeric, finite top-level metrics of a result (no meta / skipped).

    Args:
        result: ``Evaluator.compute`` output.
    """
    return {k: float(v) for k, v in result.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


def write_metrics_json(result: dict[str, Any], directory: str | os.PathLike, step: int | None = None) -> Path:
    """Write ``metrics.json`` (atomic) into ``directory``; returns its path.

    Args:
        result: ``Evaluator.compute`` output (metrics + "skipped" + "meta").
        directory: the run dir.
        step: training step the evaluation belongs to (recorded when given).
    """
    payload = dict(result) if step is None else {**result, "step": int(step)}
    return atomic_write(Path(directory) / "metrics.json", json.dumps(payload, indent=2, sort_keys=True, default=str))


def summary_line(result: dict[str, Any]) -> str:
    """One human-readable line with every metric (per-class accuracies as the worst classes and the top
    confusions) and the skipped ones.

    Args:
        result: ``Evaluator.compute`` output.
    """
    scalars = scalar_metrics(result)
    parts = [f"{k}={v:.4g}" for k, v in scalars.items() if not k.startswith(CLASS_PREFIX)]
    per = sorted((v, k[len(CLASS_PREFIX):]) for k, v in scalars.items() if k.startswith(CLASS_PREFIX))
    if per:
        parts.append("weakest classes: " + ", ".join(f"{name} {v:.2f}" for v, name in per[:3]))
    if result.get("confusions"):
        parts.append("top confusions: " + ", ".join(f"{c['prompted']} drawn as {c['drawn_as']} {c['fraction']:.0%}"
                                                    for c in result["confusions"][:3]))
    parts += [f"{k}=SKIPPED" for k in result.get("skipped", {})]
    return " ".join(parts)


def _wandb_runs(loggers: Iterable[Any]) -> list[Any]:
    """The wandb runs behind Lightning WandbLoggers, or the global ``wandb.run``."""
    runs = []
    for lg in loggers:
        if type(lg).__name__ == "WandbLogger":
            runs.append(lg.experiment)
    if not runs:
        try:
            import wandb

            if wandb.run is not None:
                runs.append(wandb.run)
        except ImportError:  # pragma: no cover - wandb is a dependency
            pass
    return runs


def sample_table(ev: Any) -> Any:
    """wandb.Table(index, image, prompt, clip_score, label) of the evaluator's kept thumbnails.

    Args:
        ev: the Evaluator after ``generate_shard`` (thumbnails, plan, datamodule class names).
    """
    import wandb

    thumbs, plan = ev.thumbnails, ev.plan
    prompts, labels, names = plan.prompts, plan.label_list, getattr(ev.dm, "class_names", None)
    table = wandb.Table(columns=["index", "image", "prompt", "clip_score", "label"])
    clip = thumbs.get("clip")
    for j, (img, i) in enumerate(zip(thumbs["image"], thumbs["index"].tolist())):
        arr = img.permute(1, 2, 0).numpy()
        arr = arr[..., 0] if arr.shape[-1] == 1 else arr
        y = labels[i]
        name = names[y] if (names and y is not None and 0 <= y < len(names)) else y
        table.add_data(i, wandb.Image(arr, caption=prompts[i]), prompts[i],
                       None if clip is None else float(clip[j]), name)
    return table


def confusion_plot(confusion: dict[str, Any]) -> Any:
    """W&B's confusion-matrix chart of prompted class (rows) vs the class the reference classifier read."""
    import wandb

    truth, drawn = [], []
    for i, row in enumerate(confusion["counts"]):
        for j, c in enumerate(row):
            truth += [i] * c
            drawn += [j] * c
    return wandb.plot.confusion_matrix(y_true=truth, preds=drawn, class_names=confusion["classes"],
                                       title="prompted class vs class drawn (reference classifier)")


def log_summary(result: dict[str, Any], loggers: Iterable[Any], prefix: str, step: int | None = None) -> list[Any]:
    """The scalar metrics of ``result`` (``prefix``-ed) to every logger and to the W&B run summaries
    (with the reasons of skipped metrics); returns those W&B runs for entry-specific tables."""
    loggers = list(loggers)
    metrics = {prefix + k: v for k, v in scalar_metrics(result).items()}
    for lg in loggers:
        lg.log_metrics(metrics, step=step)
    runs = _wandb_runs(loggers)
    for run in runs:
        run.summary.update(metrics)
        if result.get("skipped"):
            run.summary.update({prefix + "skipped": dict(result["skipped"])})
    return runs


def report(result: dict[str, Any], loggers: Iterable[Any] = (), step: int | None = None,
           evaluator: Any = None) -> None:
    """Log metrics to every logger (history), to the W&B run summary, and a W&B table of samples.

    Args:
        result: ``Evaluator.evaluate`` output.
        loggers: Lightning loggers (``trainer.loggers``); may be empty.
        step: x-axis value (training step); None for standalone evaluation.
        evaluator: the Evaluator whose thumbnails go into the W&B sample table (None = no table).
    """
    loggers = list(loggers)
    runs = log_summary(result, loggers, PREFIX, step)
    media = {}
    if runs and evaluator is not None and evaluator.thumbnails:
        media[PREFIX + "samples"] = sample_table(evaluator)
    if runs and result.get("confusion"):
        media[PREFIX + "confusion"] = confusion_plot(result["confusion"])
    wandb_loggers = [lg for lg in loggers if type(lg).__name__ == "WandbLogger"]
    for lg in wandb_loggers if media else ():
        lg.log_metrics(media, step=step)  # the row of `step`, in the logger's step order (compat/lightning.py)
    for run in runs if media and not wandb_loggers else ():  # a bare wandb.run (no logger)
        run.log({**media, **({} if step is None else {"trainer/global_step": step})})
    log.info("evaluation%s: %s", "" if step is None else f" @ step {step}", summary_line(result))
