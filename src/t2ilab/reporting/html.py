"""report.html: one self-contained page (no scripts, no external links; every image a base64
``data:`` URI, so it opens offline and can be mailed around).

Contents: the aggregated table, one matplotlib figure per metric (mean over a group's runs vs
training step, with a mean ± std band over seeds), one sample grid per group (from its first run).
"""

from __future__ import annotations

import base64
import html
import io
import statistics
from pathlib import Path
from typing import Any

from t2ilab.reporting.table import PER_CLASS_NOTE, Group, fmt_n, fmt_stat, fmt_value, ranking_line, short_name

MAX_GRID_SIDE = 1024  # larger grids are downscaled before embedding (keeps the page small)

CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f3f3f3}.figs{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}
figcaption{font-size:90%;color:#555;max-width:640px}img{max-width:100%}.warn{color:#a40}"""


def band(group: Group, metric: str) -> tuple[list[float], list[float], list[float], list[int]]:
    """Steps, mean, std (0 where fewer than 2 runs) and n over the group's runs at every step that
    any run logged ``metric`` at."""
    by_step: dict[float, list[float]] = {}
    for r in group.runs:
        for x, y in r.history.get(metric, []):
            by_step.setdefault(x, []).append(y)
    steps = sorted(by_step)
    means = [statistics.fmean(by_step[s]) for s in steps]
    stds = [statistics.stdev(by_step[s]) if len(by_step[s]) > 1 else 0.0 for s in steps]
    return steps, means, stds, [len(by_step[s]) for s in steps]


def png_uri(data: bytes) -> str:
    """``data:image/png;base64,...``"""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def curve_png(groups: list[Group], metric: str) -> bytes | None:
    """PNG of ``metric`` vs step, one line + band per group; None when no run has its history."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 3.6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    plotted = False
    for g in groups:
        steps, mean, std, _ = band(g, metric)
        if len(steps) < 2:  # a single value is a table cell, not a curve
            continue
        plotted = True
        (line,) = ax.plot(steps, mean, marker="o" if len(steps) <= 30 else None, ms=3,
                          label=f"{g.label} (n={len(g.runs)})")
        lo = [m - s for m, s in zip(mean, std)]
        hi = [m + s for m, s in zip(mean, std)]
        ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    if not plotted:
        return None
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(metric)
    ax.grid(alpha=0.3)
    fig.legend(loc="outside right upper", fontsize="small")  # beside the axes: never clipped, never over data
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def image_uri(path: Path) -> str:
    """The image as a PNG data URI, downscaled to at most MAX_GRID_SIDE pixels a side."""
    from PIL import Image

    with Image.open(path) as im:
        if max(im.size) <= MAX_GRID_SIDE and im.format == "PNG":
            return png_uri(path.read_bytes())
        im = im.convert("RGB")
        im.thumbnail((MAX_GRID_SIDE, MAX_GRID_SIDE))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return png_uri(buf.getvalue())


def _table(groups: list[Group], by: list[str], metrics: list[str], heading: Any = str) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in [*(by or ["group"]), "n", *map(heading, metrics)])
    rows = []
    for g in groups:
        keys = [fmt_value(g.values[k]) for k in by] or [g.label]
        cells = [*keys, fmt_n(g), *(fmt_stat(g.stats.get(m), len(g.runs)) for m in metrics)]
        rows.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def html_page(groups: list[Group], by: list[str], metrics: list[str], excluded: list[str] = (),
              title: str = "t2ilab ablation report", rank: str | None = None, diagnostics: list[str] = (),
              studies: list = (), per_class: list[str] = ()) -> str:
    """The complete page as a string."""
    e = html.escape
    n = sum(len(g.runs) for g in groups)
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{e(title)}</h1>",
             f"<p>{n} runs in {len(groups)} groups, grouped by "
             f"{e(', '.join(by) or 'nothing (one group)')}. Cells: mean ± sample std over seeds. "
             f"{e(ranking_line(rank).replace('`', ''))}</p>",
             _table(groups, by, metrics)]
    if per_class:
        parts.append(f"<h2>Per-class prompt accuracy</h2><p>{e(PER_CLASS_NOTE.replace('`', ''))}</p>"
                     f"{_table(groups, by, list(per_class), heading=short_name)}")
    if diagnostics:
        parts.append(f"<details><summary>Diagnostics ({e(', '.join(diagnostics))})</summary>"
                     f"{_table(groups, by, list(diagnostics))}</details>")
    parts.append("<h2>Curves</h2><div class='figs'>")
    no_history = []
    for m in metrics:
        data = curve_png(groups, m)
        if data is None:
            no_history.append(m)
            continue
        parts.append(f"<figure><img alt='{e(m)} vs step' src='{png_uri(data)}'>"
                     f"<figcaption>{e(m)}: mean over each group's runs, band = mean ± std over seeds"
                     "</figcaption></figure>")
    parts.append("</div>")
    if no_history:
        parts.append(f"<p>No history (final value only): {e(', '.join(no_history))}</p>")
    parts.append("<h2>Samples</h2><div class='figs'>")
    for g in groups:
        run = next((r for r in g.runs if r.grid is not None), None)
        if run is None:
            parts.append(f"<figure><figcaption>{e(g.label)}: no sample grid</figcaption></figure>")
            continue
        parts.append(f"<figure><img alt='samples {e(g.label)}' src='{image_uri(run.grid)}'><figcaption>"
                     f"{e(g.label)} — seed {e(fmt_value(run.seed))}, {e(str(run.grid))}</figcaption></figure>")
    parts.append("</div>")
    for s in studies:  # reporting/study.StudyView
        parts.append(f"<h2>Optuna study {e(str(s.path))}</h2><p>{s.n_complete} of {s.n_trials} trials completed; "
                     f"best objective {e('—' if s.best_value is None else f'{s.best_value:.4g}')} with "
                     f"{e(', '.join(f'{k}={fmt_value(v)}' for k, v in s.best_params.items()) or '—')}</p>")
        if s.best_command:
            parts.append(f"<p>Best trial, rerun as:</p><pre>{e(s.best_command)}</pre>")
        parts.append("<div class='figs'>" + "".join(
            f"<figure><img alt='{e(t)}' src='{png_uri(data)}'><figcaption>{e(t)} (Optuna)</figcaption></figure>"
            for t, data in s.figures) + "</div>")
        parts += [f"<p class='warn'>{e(n)}</p>" for n in s.notes]
    if excluded:
        items = "".join(f"<li>{e(x)}</li>" for x in excluded)
        parts.append(f"<h2>Excluded</h2><ul class='warn'>{items}</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)

