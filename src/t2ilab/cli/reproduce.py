"""Reproduce a finished run: ``python -m t2ilab.reproduce RUN_DIR [options] [-- extra overrides]``.

Re-runs the run's recorded Hydra overrides (same composed config and seed) through the entry point
that wrote it, into a NEW run dir (the original is never written to), warns about every difference
in git SHA / dirty state / package versions / composed config, and compares the final metrics.

Exit codes: 0 reproduced within tolerance (or nothing recorded to compare, or ``--dry-run``);
1 metrics differ beyond tolerance; 2 bad input or refused run; 3 the rerun itself failed.
Details: docs/reproduce.md; the logic lives in ``t2ilab.tracking.reproduction``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import subprocess
import sys
from pathlib import Path

from t2ilab.tracking import reproduction as rp


def warn(message: str) -> None:
    """One warning line on stderr."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def default_out_dir(run_dir: Path, now: dt.datetime | None = None) -> Path:
    """``<outputs>/reproduce/<run name>-repro-<YYYYmmdd-HHMMSS>`` (``_<pid>`` appended if taken), where
    ``<outputs>`` holds the run's ``runs/`` or ``multiruns/`` tree (else ``./outputs``): never inside the
    original and never inside a sweep dir (a report of the sweep would count the rerun as one of its runs)."""
    run_dir = Path(run_dir).resolve()
    root, name = Path.cwd() / "outputs", run_dir.name
    for parent in run_dir.parents:
        if parent.name in ("runs", "multiruns"):
            root, name = parent.parent, "_".join(run_dir.relative_to(parent).parts)
            break
    stamp = (now or dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    out = root / "reproduce" / f"{name}-repro-{stamp}"
    return out.with_name(f"{out.name}_{os.getpid()}") if out.exists() else out


def parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(
        prog="python -m t2ilab.reproduce",
        description="Re-run a finished t2ilab run from its manifest.json into a new run dir and compare its "
                    "final metrics with the recorded ones.",
        epilog="Extra Hydra overrides go after `--` (e.g. `-- trainer=gpu`); the run is then not an exact "
               "reproduction. Exit codes: 0 match / nothing to compare, 1 mismatch, 2 bad input, 3 rerun failed.")
    p.add_argument("run_dir", help="the finished run dir (holds manifest.json and COMPLETE)")
    p.add_argument("--out", help="the new run dir (default: <outputs>/reproduce/<name>-repro-<YYYYmmdd-HHMMSS>); "
                                 "must not exist or be empty")
    p.add_argument("--rtol", type=float, default=rp.DEFAULT_RTOL,
                   help="relative tolerance (default %(default)g): ok when |diff| <= atol + rtol*|recorded|")
    p.add_argument("--atol", type=float, default=rp.DEFAULT_ATOL, help="absolute tolerance (default %(default)g)")
    p.add_argument("--dry-run", action="store_true", help="print the command it would run, run nothing")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="also rerun a FAILED run or one without a COMPLETE marker")
    return p


def reproduce(args: argparse.Namespace, extra: list[str]) -> int:
    """Everything after argument parsing; raises ``ReproError`` for bad input."""
    run_dir = Path(args.run_dir).resolve()
    manifest = rp.load_manifest(run_dir)
    incomplete = rp.check_status(run_dir, args.allow_incomplete)
    if incomplete:
        warn(f"reproducing a run that did not complete ({incomplete})")
    module = rp.entry_module(manifest)
    out = Path(args.out).resolve() if args.out else default_out_dir(run_dir)
    if out == run_dir or run_dir in out.parents:
        raise rp.ReproError(f"--out {out} is the original run dir or inside it: the original is never written to")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise rp.ReproError(f"--out {out} exists and is not an empty dir: choose another")
    if args.rtol < 0 or args.atol < 0:
        raise rp.ReproError("--rtol and --atol must be >= 0")
    command = rp.build_command(manifest, out, extra)
    cwd = rp.recorded_cwd(run_dir)
    if cwd is None or not cwd.is_dir():
        if cwd is not None:
            warn(f"the original working dir {cwd} is gone: running in {Path.cwd()} (relative paths may differ)")
        cwd = Path.cwd()

    resumed = rp.resume_warning(run_dir, manifest) if module == "train" else None
    for line in [*rp.environment_diff(manifest), *([resumed] if resumed else [])]:
        warn(line)
    if extra:
        warn(f"extra overrides {' '.join(extra)}: this is NOT an exact reproduction")
    if args.dry_run:
        print(f"would run (in {cwd}, without {', '.join(rp.STRIP_ENV)} in the environment):")
        print(shlex.join(command))
        return 0

    recorded = rp.final_metrics(run_dir)
    print(f"reproducing {run_dir} (seed {manifest.get('seed')}) into {out}:\n  {shlex.join(command)}", flush=True)
    result = subprocess.run(command, cwd=cwd, env=rp.child_env())
    if result.returncode != 0:
        print(f"error: the rerun failed (exit {result.returncode}); see {out / (module + '.log')}", file=sys.stderr)
        return 3
    try:
        rerun_config = rp.load_manifest(out).get("config") or {}
    except rp.ReproError as e:
        warn(f"cannot compare configs: {e}")
    else:
        moved = (str((manifest.get("config") or {}).get("paths", {}).get("run_dir") or run_dir), str(out))
        for line in rp.config_diff(manifest.get("config") or {}, rerun_config, rp.IGNORED_CONFIG[module], moved):
            warn(line)

    if not recorded:
        print(f"nothing to compare: {run_dir} has no recorded final metrics (no W&B summary, CSV log or "
              f"metrics.json); the rerun is in {out}")
        return 0
    rows = rp.compare_metrics(recorded, rp.final_metrics(out), args.rtol, args.atol)
    print(rp.format_table(rows, args.rtol, args.atol))
    print(f"original: {run_dir}\nrerun:    {out}")
    return 0 if all(r.ok for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``; overrides after ``--`` are extra) and reproduce."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    args = parser().parse_args(argv)
    try:
        return reproduce(args, extra)
    except rp.ReproError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
