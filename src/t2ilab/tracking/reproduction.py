"""Re-run a finished run from its manifest and compare what it ends with (``python -m t2ilab.reproduce``).

``load_manifest``/``check_status`` (manifest.json + COMPLETE), ``environment_diff`` (git SHA, dirty
flag, package versions), ``build_command``/``child_env`` (recorded overrides + a new
``hydra.run.dir``; nothing in the environment may point the child at the original run dir or W&B
run), ``final_metrics``/``compare_metrics``/``format_table`` (numeric end-of-run values without
time-like keys) and ``config_diff`` (catches changed YAML defaults). Entry point: t2ilab/cli/reproduce.py.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import yaml

from t2ilab.tracking.manifest import git_state, package_versions
from t2ilab.tracking.run_status import status_of
from t2ilab.utils.config import flatten

DEFAULT_RTOL = 1e-6
DEFAULT_ATOL = 1e-9
# never compared: W&B internals (``_runtime``, ``_timestamp``, ``_step``, ``_wandb/...``) and anything
# that measures time, speed or memory (differs between two identical runs)
NONDETERMINISTIC = re.compile(r"(^|/)_|time|per_sec|seconds|throughput|duration|elapsed|memory|(^|/)mem", re.I)
# the child must not inherit anything that names the original run dir or W&B run
STRIP_ENV = ("T2ILAB_RUN_NAME", "SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "WANDB_RUN_ID",
             "WANDB_RESUME")
# overrides replaced by the reproduction itself (per entry point; hydra.* are always dropped), and the
# config keys that differ on purpose between a run and its reproduction
REPLACED = {"train": ("ckpt_path", "paths.run_dir"), "eval": ("out_dir", "paths.run_dir")}
IGNORED_CONFIG = {"train": ("paths.run_dir", "ckpt_path"), "eval": ("paths.run_dir", "out_dir")}


class ReproError(Exception):
    """Bad input or a refused run (the message says which and why)."""


def load_manifest(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``<run_dir>/manifest.json`` as a dict; a clear ``ReproError`` when missing or unreadable."""
    path = Path(run_dir) / "manifest.json"
    if not path.is_file():
        what = "the directory does not exist" if not Path(run_dir).is_dir() else \
            "every t2ilab.train / t2ilab.eval run dir has one, written at start"
        raise ReproError(f"{path} not found: not a t2ilab run dir ({what})")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReproError(f"{path} is not readable JSON ({type(e).__name__}: {e})") from e
    missing = [k for k in ("command", "overrides") if k not in manifest]
    if missing:
        raise ReproError(f"{path} lacks {', '.join(missing)}: cannot rebuild the command")
    return manifest


def check_status(run_dir: str | os.PathLike, allow_incomplete: bool = False) -> str | None:
    """None for a COMPLETE run; otherwise the reason it is not, raised as ``ReproError`` unless
    ``allow_incomplete`` (then returned, for a warning)."""
    status = status_of(run_dir)
    if status is not None and status.get("status") == "COMPLETE":
        return None
    if status is None:
        reason = "it has no COMPLETE/FAILED marker: still running, or killed with kill -9"
    else:
        reason = f"it is marked {status.get('status')}: {status.get('reason') or 'no reason recorded'}" + \
                 (f" (at step {status['step']})" if status.get("step") is not None else "")
    if not allow_incomplete:
        raise ReproError(f"refusing to reproduce {run_dir}: {reason}; pass --allow-incomplete to rerun it anyway")
    return reason


def entry_module(manifest: Mapping[str, Any]) -> str:
    """``train`` or ``eval``: the entry point that wrote the manifest (from its recorded command, else
    the config's ``task_name`` — a job launched by submitit records ``python -m submitit.core._submit``)."""
    command = [str(c) for c in manifest.get("command") or []]
    for part in command[1:3]:
        name = (Path(part).stem if part.endswith(".py") else Path(part).name.rsplit(".", 1)[-1])
        if name.removeprefix("t2ilab-") in REPLACED:  # python -m t2ilab.train / the t2ilab-train script
            return name.removeprefix("t2ilab-")
    task = str((manifest.get("config") or {}).get("task_name") or "")
    if task in REPLACED:
        return task
    raise ReproError(f"cannot tell which entry point wrote this manifest from its command {command}")


def environment_diff(manifest: Mapping[str, Any], git: Mapping[str, Any] | None = None,
                     versions: Mapping[str, str | None] | None = None) -> list[str]:
    """One line per difference between the recorded and the current git state and package versions."""
    git = git_state() if git is None else git
    versions = package_versions() if versions is None else versions
    rec_git, lines = manifest.get("git") or {}, []
    if rec_git.get("sha") != git.get("sha"):
        lines.append(f"git SHA differs: recorded {rec_git.get('sha')}, now {git.get('sha')}")
    if rec_git.get("dirty") != git.get("dirty"):
        lines.append(f"git dirty state differs: recorded dirty={rec_git.get('dirty')}, now dirty={git.get('dirty')}")
    elif rec_git.get("dirty"):
        lines.append("the recorded run had uncommitted changes (dirty=True) that the manifest does not hold: "
                     "the code may differ even at the same SHA")
    rec_versions = manifest.get("versions") or {}
    for name in sorted(set(rec_versions) | set(versions)):
        if rec_versions.get(name) != versions.get(name):
            lines.append(f"version of {name} differs: recorded {rec_versions.get(name)}, now {versions.get(name)}")
    return lines


def override_key(override: str) -> str:
    """The config key an override sets: ``+a.b=1`` -> ``a.b``, ``~x`` -> ``x``, ``model=gan`` -> ``model``."""
    return override.split("=", 1)[0].lstrip("~+").strip()


def hydra_quote(value: str) -> str:
    """A Hydra override value: plain when safe, else single-quoted."""
    safe = re.fullmatch(r"[\w/.\-+@%]+", value)
    return value if safe else "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def child_overrides(manifest: Mapping[str, Any], out_dir: str | os.PathLike, extra: Sequence[str] = ()) -> list[str]:
    """The recorded overrides (minus hydra.* and those the reproduction sets) with ``extra`` replacing
    recorded ones of the same key, then ``hydra.run.dir=<out_dir>`` (+ ``ckpt_path=null`` for train)."""
    module = entry_module(manifest)
    fixed = REPLACED[module]
    ours = lambda o: override_key(o) in fixed or override_key(o).split(".")[0].split("/")[0] == "hydra"  # noqa: E731
    if any(ours(o) for o in extra):
        raise ReproError(f"extra overrides {[o for o in extra if ours(o)]} are set by the reproduction itself "
                         "(use --out for the run dir)")
    extra_keys = {override_key(o) for o in extra}
    kept = [o for o in manifest.get("overrides") or [] if not ours(o) and override_key(o) not in extra_keys]
    out = [*kept, *extra, f"hydra.run.dir={hydra_quote(str(Path(out_dir).resolve()))}"]
    # what the run resolved itself (a sweep job evaluated its final model: eval_after=auto in a multirun)
    recorded = (manifest.get("config") or {}).get("eval_after")
    if module == "train" and isinstance(recorded, bool) and "eval_after" not in {override_key(o) for o in out}:
        out.append(f"eval_after={str(recorded).lower()}")
    return out + (["ckpt_path=null"] if module == "train" else [])


def build_command(manifest: Mapping[str, Any], out_dir: str | os.PathLike, extra: Sequence[str] = (),
                  python: str | None = None) -> list[str]:
    """``[python, -m, t2ilab.<train|eval>, *overrides]`` re-running the recorded run into ``out_dir``."""
    return [python or sys.executable, "-m", f"t2ilab.{entry_module(manifest)}",
            *child_overrides(manifest, out_dir, extra)]


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The child's environment: without ``STRIP_ENV``, W&B offline unless set, and this t2ilab package
    first on PYTHONPATH (the rerun uses the same code as this tool)."""
    import t2ilab

    out = {k: v for k, v in (os.environ if env is None else env).items() if k not in STRIP_ENV}
    out.setdefault("WANDB_MODE", "offline")
    src = str(Path(t2ilab.__file__).resolve().parents[1])
    out["PYTHONPATH"] = os.pathsep.join([src, *[p for p in out.get("PYTHONPATH", "").split(os.pathsep) if p]])
    return out


def recorded_cwd(run_dir: str | os.PathLike) -> Path | None:
    """The working directory of the original launch (Hydra's ``.hydra/hydra.yaml``), None if unknown."""
    path = Path(run_dir) / ".hydra" / "hydra.yaml"
    try:
        cwd = yaml.safe_load(path.read_text())["hydra"]["runtime"]["cwd"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return None
    return Path(cwd) if cwd else None


def resume_warning(run_dir: str | os.PathLike, manifest: Mapping[str, Any]) -> str | None:
    """Why a fresh rerun may legitimately differ: the recorded run resumed from a checkpoint (train.log
    says so, or its config names one) while its manifest holds only the last launch's overrides."""
    log = Path(run_dir) / "train.log"
    resumes = log.read_text(errors="replace").count("ckpt_path=auto: resuming from") if log.is_file() else 0
    ckpt = (manifest.get("config") or {}).get("ckpt_path")
    if not resumes and str(ckpt).lower() in ("none", "null", "auto", ""):
        return None
    how = f"{resumes} relaunch(es) into its run dir" if resumes else f"ckpt_path={ckpt}"
    return (f"the recorded run resumed from a checkpoint ({how}); the manifest holds only the last launch's "
            "overrides and the rerun trains from step 0: it matches only if every launch used these overrides")


def _numeric(summary: Mapping[str, Any]) -> dict[str, float]:
    """Numeric, deterministic values of a W&B summary (no media fields, no time-like keys)."""
    media = [k[: -len("_type")] for k in summary if k.endswith("/_type")]
    return {k: float(v) for k, v in summary.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
            and not NONDETERMINISTIC.search(k) and not any(k.startswith(m) for m in media)}


def final_metrics(run_dir: str | os.PathLike) -> dict[str, float]:
    """The deterministic end-of-run values of a run dir (the one run reader, ``tracking/run_metrics``:
    metrics.json > metrics.csv > W&B summary), without time/throughput/W&B-internal keys. ``{}`` if none."""
    from t2ilab.tracking.run_metrics import read_metrics

    return _numeric(read_metrics(run_dir).final)


class Row(NamedTuple):
    """One compared metric; ``recorded``/``reproduced`` are None where the metric is missing."""

    key: str
    recorded: float | None
    reproduced: float | None
    diff: float | None
    ok: bool


def compare_metrics(recorded: Mapping[str, float], reproduced: Mapping[str, float],
                    rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL) -> list[Row]:
    """Each key of either side: ok when ``|a - b| <= atol + rtol * |a|`` (a = recorded; NaN == NaN,
    equal infinities match); a metric on one side only is a mismatch."""
    rows = []
    for key in sorted(set(recorded) | set(reproduced)):
        a, b = recorded.get(key), reproduced.get(key)
        if a is None or b is None:
            rows.append(Row(key, a, b, None, False))
            continue
        if math.isnan(a) or math.isnan(b) or math.isinf(a) or math.isinf(b):
            same = (math.isnan(a) and math.isnan(b)) or a == b
            rows.append(Row(key, a, b, 0.0 if same else math.inf, same))
            continue
        diff = abs(a - b)
        rows.append(Row(key, a, b, diff, diff <= atol + rtol * abs(a)))
    return rows


def format_table(rows: list[Row], rtol: float, atol: float) -> str:
    """recorded vs reproduced vs |diff| per metric, the tolerance and a one-line verdict."""
    def f(v: float | None) -> str:
        return "missing" if v is None else f"{v:.10g}"

    width = max([len("metric"), *(len(r.key) for r in rows)])
    lines = [f"{'metric':<{width}}  {'recorded':>16}  {'reproduced':>16}  {'|diff|':>10}  check",
             "-" * (width + 52)]
    lines += [f"{r.key:<{width}}  {f(r.recorded):>16}  {f(r.reproduced):>16}  {f(r.diff):>10}  "
              f"{'ok' if r.ok else 'MISMATCH'}" for r in rows]
    bad = [r for r in rows if not r.ok]
    lines.append(f"tolerance: |diff| <= atol + rtol * |recorded| with rtol={rtol:g}, atol={atol:g}")
    lines.append(f"MISMATCH: {len(bad)} of {len(rows)} metrics differ beyond tolerance" if bad
                 else f"REPRODUCED: all {len(rows)} metrics within tolerance")
    return "\n".join(lines)


def config_diff(recorded: Mapping[str, Any], rerun: Mapping[str, Any], ignore: tuple[str, ...] = (),
                moved: tuple[str, str] | None = None) -> list[str]:
    """One line per config key whose value differs (or exists on one side only), ``ignore`` left out;
    ``moved=(old_run_dir, new_run_dir)``: string values equal once the run dir is swapped are the same."""
    a, b, missing = flatten(dict(recorded)), flatten(dict(rerun)), "<absent>"

    def same(k: str) -> bool:
        x, y = a.get(k, missing), b.get(k, missing)
        if x == y or moved is None or not isinstance(x, str):
            return x == y
        old, new = moved
        return (x == old or x.startswith(old + os.sep)) and y == new + x[len(old):]

    return [f"config key {k} differs: recorded {a.get(k, missing)!r}, rerun {b.get(k, missing)!r}"
            for k in sorted(set(a) | set(b)) if k not in ignore and not same(k)]
