"""Group runs by config keys, aggregate seeds (mean ± sample std, n) per metric, render Markdown.

Grouping keys, unless given (``--by``): the flattened config keys whose values differ between the
runs, except ``seed`` (what gets aggregated) and values that merely follow from the seed or the run
dir — keys named ``*seed`` equal to the run's seed (``data.seed: ${seed}``), everything under
``paths.``, and strings containing the run dir (checkpoint dirs, logger save dirs). When a Hydra
group choice differs (``logger=csv`` vs ``logger=wandb``), the group's name is the key and the keys
under it that follow from the choice are dropped (for the global presets ``experiment`` and
``debug``: every key that follows from the choice); keys that still vary within one choice stay.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from typing import Any, Iterable

from t2ilab.reporting.runs import Run

UNSET = "(unset)"  # a grouping key missing from a run's config
RUN_SPECIFIC_PREFIXES = ("paths.",)
GLOBAL_GROUPS = ("experiment", "debug")  # `# @package _global_` groups: their keys live anywhere


@dataclass
class Stat:
    """Mean and sample standard deviation (NaN when n < 2) of one metric over a group's runs."""

    mean: float
    std: float
    n: int
    values: list[float]


@dataclass
class Group:
    """Runs sharing the values of the grouping keys, with per-metric statistics over them."""

    values: dict[str, Any]
    runs: list[Run]
    stats: dict[str, Stat]
    failed: int = 0  # FAILED runs with this group's values (left out of the statistics)

    @property
    def label(self) -> str:
        """``key=value, ...`` (``all runs`` when there are no grouping keys)."""
        return ", ".join(f"{k}={fmt_value(v)}" for k, v in self.values.items()) or "all runs"


def fmt_value(v: Any) -> str:
    """A config value as written on a command line (``0.001``, ``[1,2]``, ``null``); floats to 4 significant
    digits (a searched ``lr=0.07668830376515555`` reads ``0.07669``; report.json keeps full precision)."""
    if isinstance(v, str):
        return v
    if isinstance(v, float) and math.isfinite(v):
        return f"{v:.4g}"
    return json.dumps(v, separators=(",", ":"), default=str)


def aggregate(values: Iterable[float]) -> Stat:
    """Mean, sample std (ddof=1; NaN for a single value) and count."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("aggregate() needs at least one value")
    std = statistics.stdev(vals) if len(vals) > 1 else math.nan
    return Stat(statistics.fmean(vals), std, len(vals), vals)


def _canon(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def _run_specific(key: str, runs: list[Run]) -> bool:
    """True for keys whose value follows from the seed or the run dir rather than from a choice."""
    if key == "seed" or key.startswith(RUN_SPECIFIC_PREFIXES):
        return True
    present = [r for r in runs if key in r.config]
    if key.rsplit(".", 1)[-1].endswith("seed") and all(r.config[key] == r.seed for r in present):
        return True

    def in_run_dir(r: Run) -> bool:
        v = r.config[key]
        dirs = {str(r.path), str(r.path.resolve()), str(r.config.get("paths.run_dir", r.path))}
        return isinstance(v, str) and any(d in v for d in dirs)

    return bool(present) and all(in_run_dir(r) for r in present)


def differing_keys(runs: list[Run]) -> list[str]:
    """Config keys whose values differ between runs (a missing key counts as a value), minus the
    seed and seed-/run-dir-derived keys; sorted."""
    keys = sorted(set().union(*(r.config for r in runs))) if runs else []
    out = []
    for k in keys:
        seen = {_canon(r.config[k]) if k in r.config else UNSET for r in runs}
        if len(seen) > 1 and not _run_specific(k, runs):
            out.append(k)
    choices = [c for c in out if any(c in r.choices for r in runs)]
    return [k for k in out if k in choices or not any(_follows(k, c, runs) for c in choices)]


def _follows(key: str, choice: str, runs: list[Run]) -> bool:
    """Whether ``key`` lies under the group ``choice`` (any key for global groups) and has one value
    per chosen option."""
    if choice not in GLOBAL_GROUPS and not key.startswith(choice.replace("/", ".") + "."):
        return False
    per_option: dict[str, set[str]] = {}
    for r in runs:
        value = _canon(r.config[key]) if key in r.config else UNSET
        per_option.setdefault(_canon(r.config.get(choice, UNSET)), set()).add(value)
    return all(len(v) == 1 for v in per_option.values())


def _sort_key(v: Any) -> tuple[int, Any]:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (0, v)
    if v is UNSET:
        return (3, "")
    return (1, v) if isinstance(v, str) else (2, _canon(v))


def available_metrics(runs: list[Run]) -> list[str]:
    """Every final metric of any run, sorted."""
    return sorted(set().union(*(r.final for r in runs))) if runs else []


def group_runs(runs: list[Run], by: list[str], metrics: list[str]) -> list[Group]:
    """Groups of ``runs`` with equal values of ``by``, sorted by those values; runs inside a group
    sorted by seed; ``stats`` holds each of ``metrics`` that at least one run of the group has."""
    buckets: dict[str, tuple[dict[str, Any], list[Run]]] = {}
    for r in runs:
        values = {k: r.config.get(k, UNSET) for k in by}
        buckets.setdefault(_canon([values[k] for k in by]), (values, []))[1].append(r)
    groups = []
    for values, members in buckets.values():
        members.sort(key=lambda r: (_sort_key(r.seed), str(r.path)))
        stats = {m: aggregate(r.final[m] for r in members if m in r.final)
                 for m in metrics if any(m in r.final for r in members)}
        groups.append(Group(values, members, stats))
    groups.sort(key=lambda g: [_sort_key(g.values[k]) for k in by])
    return groups


# what a report ranks by when neither --rank nor the runs' optimized_metric says: quality first, then val loss
RANK_PRIORITY = ("eval/classifier_fd", "eval/fid", "eval/kid_mean", "eval/prompt_accuracy", "eval/clip_score")


def is_per_class(metric: str) -> bool:
    """Per-class prompt accuracy (``eval/class_accuracy/<class>``) or its worst class: a table of their own."""
    from t2ilab.tracking.objective import CLASS_PREFIX, WORST_CLASS

    return CLASS_PREFIX in metric or metric.endswith(WORST_CLASS)


def split_metrics(metrics: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(quality metrics: a best value means something; per class: the worst class first, then each class;
    diagnostics: counts, stds, bookkeeping)."""
    from t2ilab.tracking.objective import metric_goal

    per_class = sorted((m for m in metrics if is_per_class(m)), key=lambda m: short_name(m) != "worst class")
    quality = [m for m in metrics if metric_goal(m) is not None and m not in per_class]
    return quality, per_class, [m for m in metrics if m not in quality and m not in per_class]


def short_name(metric: str) -> str:
    """Column heading of a per-class metric: the class name (``worst class`` for the minimum)."""
    from t2ilab.tracking.objective import CLASS_PREFIX, WORST_CLASS

    if CLASS_PREFIX in metric:
        return metric.split(CLASS_PREFIX, 1)[1]
    return "worst class" if metric.endswith(WORST_CLASS) else metric


def rank_metric(runs: list[Run], metrics: list[str], requested: str | None = None) -> str | None:
    """The metric groups are ranked by: ``requested`` (--rank), else the runs' ``optimized_metric``, else the
    first of RANK_PRIORITY they have; None = no quality metric to rank by (groups stay in key order)."""
    from t2ilab.tracking.objective import metric_goal

    if requested:
        return requested
    objectives = {r.config.get("optimized_metric") for r in runs} - {None}
    for m in [*sorted(objectives), *RANK_PRIORITY]:
        if m in metrics and metric_goal(m) is not None:
            return m
    return None


def rank_groups(groups: list[Group], metric: str) -> list[Group]:
    """Best group first by the mean of ``metric`` (its goal: min or max); groups without it last."""
    from t2ilab.tracking.objective import metric_goal

    sign = -1.0 if metric_goal(metric) == "max" else 1.0
    return sorted(groups, key=lambda g: (metric not in g.stats, sign * g.stats[metric].mean if metric in g.stats else 0))


def flag_failed(groups: list[Group], failed: list[Run], by: list[str]) -> None:
    """Count, per group, the FAILED runs that share its values: a group that lost seeds says so."""
    for g in groups:
        g.failed = sum(all(_canon(r.config.get(k, UNSET)) == _canon(g.values[k]) for k in by) for r in failed)


def fmt_n(g: Group) -> str:
    return f"{len(g.runs)} (+{g.failed} failed)" if g.failed else str(len(g.runs))


def fmt_stat(s: Stat | None, group_n: int) -> str:
    """``mean ± std`` (4 significant digits); ``—`` when absent; ``(n=k)`` when fewer runs than the group."""
    if s is None:
        return "—"
    text = f"{s.mean:.4g}" if math.isnan(s.std) else f"{s.mean:.4g} ± {s.std:.4g}"
    return text if s.n == group_n else f"{text} (n={s.n})"


def _row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def markdown_table(groups: list[Group], by: list[str], metrics: list[str], heading: Any = str) -> str:
    """One row per group: grouping values, n, then ``mean ± std`` per metric (column ``heading(metric)``)."""
    head = [*(by or ["group"]), "n", *map(heading, metrics)]
    lines = [_row(head), _row(["---"] * len(head))]
    for g in groups:
        keys = [fmt_value(g.values[k]) for k in by] or [g.label]
        lines.append(_row([*keys, fmt_n(g), *(fmt_stat(g.stats.get(m), len(g.runs)) for m in metrics)]))
    return "\n".join(lines)


PER_CLASS_NOTE = ("Share of each prompted class that the reference classifier reads as that class (same order "
                  "as the table above); each run's `metrics.json` lists its most frequent confusions.")


def ranking_line(rank: str | None) -> str:
    from t2ilab.tracking.objective import metric_goal

    if rank is None:
        return "No quality metric to rank by (`--rank METRIC`): groups in key order."
    better = "lower" if metric_goal(rank) == "min" else "higher"
    return f"Ranked by `{rank}` ({better} is better), best first."


def markdown_report(groups: list[Group], by: list[str], metrics: list[str], auto: bool,
                    excluded: list[str] = (), rank: str | None = None, diagnostics: list[str] = (),
                    per_class: list[str] = ()) -> str:
    """The whole report.md: summary line, the ranked table, per-class prompt accuracy, diagnostics, runs per
    group, excluded runs."""
    n = sum(len(g.runs) for g in groups)
    how = ("the config keys that differ between runs" if auto else "the --by keys") if by else "nothing (one group)"
    out = ["# Ablation report", "",
           f"{n} runs in {len(groups)} groups; grouped by {how}: {', '.join(f'`{k}`' for k in by) or '—'}. "
           "Cells are mean ± sample std over the group's runs (seeds); n = runs per group. " + ranking_line(rank),
           "", markdown_table(groups, by, metrics), ""]
    if per_class:
        out += ["## Per-class prompt accuracy", "", PER_CLASS_NOTE, "",
                markdown_table(groups, by, list(per_class), heading=short_name), ""]
    if diagnostics:
        out += ["## Diagnostics", "", markdown_table(groups, by, list(diagnostics)), ""]
    out += ["## Runs", "", _row(["group", "seed", "run dir"]), _row(["---"] * 3)]
    out += [_row([g.label, fmt_value(r.seed), str(r.path)]) for g in groups for r in g.runs]
    if excluded:
        out += ["", "## Excluded", "", *(f"- {line}" for line in excluded)]
    return "\n".join(out) + "\n"


def report_data(groups: list[Group], by: list[str], metrics: list[str], excluded: list[str] = (),
                rank: str | None = None) -> dict:
    """report.json: the same numbers at full precision (std null when n < 2)."""
    def stat(s: Stat) -> dict[str, Any]:
        return {"mean": s.mean, "std": None if math.isnan(s.std) else s.std, "n": s.n, "values": s.values}

    return {"group_by": by, "metrics": metrics, "ranked_by": rank, "excluded": list(excluded),
            "groups": [{"label": g.label, "values": g.values,
                        "runs": [{"path": str(r.path), "seed": r.seed} for r in g.runs], "failed_runs": g.failed,
                        "metrics": {m: stat(s) for m, s in g.stats.items()}} for g in groups]}
