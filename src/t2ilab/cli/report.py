"""Ablation report over finished runs: ``python -m t2ilab.report PATH... [--by KEY] [--metric NAME] [--out DIR]``.

PATHs are run dirs or any directories with run dirs below them (a Hydra multirun/sweep dir, a folder
of sweeps). Only local paths are read — W&B projects (``entity/project``) are not: runs are offline
by default, and an online run's dir holds the same files. Runs are grouped by the config keys that
differ between them (or by ``--by KEY``, repeatable); seeds are aggregated (mean ± sample std, n)
for every final metric (or each ``--metric NAME``, repeatable). The Markdown table is printed and
written with report.html (curves with a mean ± std band over seeds, one sample grid per group;
self-contained, works offline) and report.json (full precision) into ``--out``, by default the
PATH when one is given, else the PATHs' common parent directory (the current directory when that
is the filesystem root). One report compares runs of one kind (``--kind``: train by default, eval,
roundtrip, ...); dirs that look like runs but hold no manifest are listed with why. FAILED or unfinished runs are left out with a warning; exit status 2 when
a PATH does not exist or no finished run with metrics is found (each PATH/run is named with why).
See docs/report.md.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from pathlib import Path

from t2ilab.reporting.runs import collect_runs
from t2ilab.reporting.table import (available_metrics, differing_keys, flag_failed, group_runs, markdown_report,
                                   rank_groups, rank_metric, report_data, split_metrics)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m t2ilab.report", description=__doc__.split("\n\n")[0],
                                epilog="Example: python -m t2ilab.report outputs/multirun/2026-12-02/20-19-05 "
                                       "--by model.optimizer.lr --metric val/loss")
    p.add_argument("paths", nargs="+", metavar="PATH", help="run dir or directory with run dirs below it")
    p.add_argument("--by", action="append", default=[], metavar="KEY",
                   help="group by this dotted config key (repeatable; default: the keys that differ)")
    p.add_argument("--metric", action="append", default=[], metavar="NAME",
                   help="report only this metric (repeatable; default: every final metric)")
    p.add_argument("--rank", metavar="NAME",
                   help="rank groups by this metric, best first (default: the runs' optimized_metric, else "
                        "eval/classifier_fd, eval/fid, ... when present)")
    p.add_argument("--kind", metavar="KIND",
                   help="which runs to compare: train, eval, roundtrip, ... (default: train runs when there are any, "
                        "else the kind found); runs of other kinds are listed as left out")
    p.add_argument("--out", metavar="DIR", help="where report.md/.html/.json go (default: see above)")
    return p.parse_args(argv)


def default_out(paths: list[str]) -> Path:
    """The one PATH, else the PATHs' common parent (cwd when that is the filesystem root)."""
    resolved = [Path(p).resolve() for p in paths]
    if len(resolved) == 1:
        return resolved[0]
    common = Path(os.path.commonpath(resolved))
    return Path.cwd() if common == Path(common.anchor) else common


def _fail(message: str, lines: list[str] = ()) -> int:
    print(f"error: {message}", *(f"  {line}" for line in lines), sep="\n", file=sys.stderr)
    return 2


def _check_keys(by: list[str], config_keys: set[str]) -> str | None:
    """An error message for unusable ``--by`` keys, else None."""
    if "seed" in by:
        return "--by seed: the seed is what gets aggregated (mean ± std over seeds), it cannot be a group key"
    unknown = [k for k in by if k not in config_keys]
    if unknown:
        hints = [f"{k} (did you mean {', '.join(difflib.get_close_matches(k, config_keys, 3)) or '?'})"
                 for k in unknown]
        return f"--by key(s) not in any run's config: {'; '.join(hints)}"
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = parse_args(argv)
    loaded = collect_runs(args.paths)
    if loaded.missing:
        return _fail("cannot read these paths:", loaded.missing)
    if not loaded.runs:
        return _fail("no finished runs with metrics to report:", loaded.excluded)
    kinds = sorted({r.kind for r in loaded.runs})
    kind = args.kind or ("train" if "train" in kinds else kinds[0])
    if kind not in kinds:
        return _fail(f"--kind {kind}: no finished {kind} runs here; found {', '.join(kinds)} runs")
    # an eval run and a training run have different metrics and configs: never one table
    loaded.excluded += [f"{r.path}: {'an' if r.kind[0] in 'aeiou' else 'a'} {r.kind} run "
                        f"(report these with --kind {r.kind})" for r in loaded.runs if r.kind != kind]
    loaded.runs = [r for r in loaded.runs if r.kind == kind]
    if loaded.excluded:
        print(f"warning: {len(loaded.excluded)} left out:", *(f"  {x}" for x in loaded.excluded), sep="\n",
              file=sys.stderr)
    runs = loaded.runs
    if (msg := _check_keys(args.by, set().union(*(r.config for r in runs)))) is not None:
        return _fail(msg)
    by = args.by or differing_keys(runs)
    available = available_metrics(runs)
    unknown = [m for m in args.metric if m not in available]
    if unknown:
        return _fail(f"--metric {', '.join(unknown)}: no run has it; available: {', '.join(available)}")
    if args.rank and args.rank not in available:
        return _fail(f"--rank {args.rank}: no run has it; available: {', '.join(available)}")
    metrics, per_class, diagnostics = ((list(dict.fromkeys(args.metric)), [], []) if args.metric
                                       else split_metrics(available))
    rank = rank_metric(runs, metrics + per_class + diagnostics, args.rank)
    groups = group_runs(runs, by, metrics + per_class + diagnostics)
    if rank is not None:
        groups = rank_groups(groups, rank)
    flag_failed(groups, [r for r in loaded.failed if r.kind == kind], by)

    from t2ilab.reporting.html import html_page
    from t2ilab.utils.io import ensure_writable_dir

    try:
        out = ensure_writable_dir(args.out or default_out(args.paths), "--out")
    except PermissionError as e:
        return _fail(str(e))
    from t2ilab.reporting.study import find_studies, load_study_view, study_markdown

    studies = [load_study_view(p) for p in find_studies(args.paths)]  # Optuna sweep dirs: history, importances
    md = markdown_report(groups, by, metrics, auto=not args.by, excluded=loaded.excluded, rank=rank,
                         diagnostics=diagnostics, per_class=per_class)
    md += "".join("\n" + "\n".join(study_markdown(s)) for s in studies)
    (out / "report.md").write_text(md)
    (out / "report.json").write_text(json.dumps(report_data(groups, by, metrics + per_class + diagnostics,
                                                            loaded.excluded, rank),
                                                indent=1,
                                                default=str))
    (out / "report.html").write_text(html_page(groups, by, metrics, loaded.excluded, rank=rank,
                                               diagnostics=diagnostics, studies=studies, per_class=per_class))
    try:
        print(md)
    except BrokenPipeError:  # `... | head`: the files are written, the reader just stopped
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so the interpreter's final flush stays quiet
    print(f"wrote {out / 'report.md'}, {out / 'report.html'}, {out / 'report.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
