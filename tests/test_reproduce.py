"""``python -m t2ilab.reproduce``: a real tiny run re-run from its manifest into a new dir gives the
same final values (read back independently from both runs' W&B logs), the original is untouched; a
changed seed is caught (exit 1, config diff names it); tolerance, environment diff, override
rewriting and bad input are checked on synthetic data."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest

from t2ilab import reproduce
from t2ilab.tracking import reproduction as rp
from t2ilab.tracking import run_status
from t2ilab.compat.wandb import read_offline_run
from cli_helpers import TINY, run, wandb_run


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """(mtime_ns, sha256) of every file under ``root`` — except W&B's own debug logs, which the original
    run's wandb-core service may still append to after that run exited (seen on a loaded 2-core machine)."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file() and not (p.parent.name == "logs" and p.name.startswith("debug"))}


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("repro")
    run_dir = root / "run"
    run("train", "debug=fast", *TINY, f"hydra.run.dir={run_dir}", f"paths.cache_dir={root / 'cache'}")
    return run_dir


def test_rerun_reproduces_the_metrics_into_a_new_dir_and_leaves_the_original_alone(original):
    before = snapshot(original)
    out = original.parent / "again"
    r = run("reproduce", str(original), "--out", str(out), check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "REPRODUCED: all" in r.stdout and "rtol=1e-06, atol=1e-09" in r.stdout
    assert "config key" not in r.stderr  # same composed config (run-dir-derived paths aside)
    assert snapshot(original) == before  # not one byte or mtime of the original changed
    assert run_status.status_of(out)["status"] == "COMPLETE"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 3 and "ckpt_path=null" in manifest["overrides"]
    assert f"hydra.run.dir={out}" in manifest["command"]
    # read both runs' logged values straight from their W&B transaction logs
    a, b = read_offline_run(wandb_run(original)), read_offline_run(wandb_run(out))
    assert a["id"] != b["id"]  # a new W&B run, not a continuation of the original
    for key in ("train/loss", "val/loss", "trainer/global_step", "lr-AdamW"):
        assert a["summary"][key] == b["summary"][key], key
    losses = [row["train/loss"] for row in a["history"] if "train/loss" in row]
    assert losses == [row["train/loss"] for row in b["history"] if "train/loss" in row] and len(losses) >= 3


@pytest.mark.slow  # a full rerun (14 s on 2 cores); the default suite keeps the rerun-reproduces test
def test_a_different_seed_is_a_mismatch_and_the_config_diff_names_it(original, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["overrides"] = [o.replace("seed=3", "seed=4") for o in manifest["overrides"]]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    r = run("reproduce", str(copy), "--out", str(tmp_path / "rerun"), check=False)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    assert "MISMATCH:" in r.stdout and "val/loss" in r.stdout
    assert "config key seed differs: recorded 3, rerun 4" in r.stderr


def test_dry_run_prints_the_command_and_extra_overrides_replace_recorded_ones(original, capsys):
    code = reproduce.main([str(original), "--out", "/tmp/x-repro", "--dry-run", "--", "seed=4", "trainer=gpu"])
    out, err = capsys.readouterr()
    assert code == 0 and "-m t2ilab.train" in out
    assert "seed=4" in out and "seed=3" not in out and "trainer=gpu" in out
    # the run's own resolution of eval_after (false: a single run) is passed on, so a rerun evaluates iff the run did
    assert out.rstrip().endswith("hydra.run.dir=/tmp/x-repro eval_after=false ckpt_path=null")
    assert "NOT an exact reproduction" in err
    assert not Path("/tmp/x-repro").exists()


def test_compare_metrics_tolerance():
    rec = {"val/loss": 1.0, "train/loss": 0.5, "step": 3.0, "nan": math.nan}
    assert all(r.ok for r in rp.compare_metrics(rec, dict(rec)))
    rows = {r.key: r for r in rp.compare_metrics(rec, {**rec, "val/loss": 1.0 + 1e-3}, rtol=1e-6, atol=0)}
    assert not rows["val/loss"].ok and rows["val/loss"].diff == pytest.approx(1e-3) and rows["step"].ok
    assert all(r.ok for r in rp.compare_metrics(rec, {**rec, "val/loss": 1.0 + 1e-3}, rtol=2e-3, atol=0))
    assert all(r.ok for r in rp.compare_metrics(rec, {**rec, "val/loss": 1.0 + 1e-3}, rtol=0, atol=2e-3))
    missing = rp.compare_metrics(rec, {k: v for k, v in rec.items() if k != "step"})
    assert [r.key for r in missing if not r.ok] == ["step"]
    table = rp.format_table(rows.values(), 1e-6, 0)
    assert "MISMATCH: 1 of 4" in table and "rtol=1e-06, atol=0" in table and "missing" not in table


def test_final_metrics_skip_time_media_and_internal_keys_and_read_the_newest_metrics_json(tmp_path):
    summary = {"val/loss": 0.5, "_runtime": 3, "_timestamp": 1.7e9, "perf/samples_per_sec": 9.0,
               "time/epoch_seconds": 2.0, "samples/grid/_type": "images/separated", "samples/grid/width": 334,
               "flag": True, "epoch": 1}
    assert rp._numeric(summary) == {"val/loss": 0.5, "epoch": 1.0}
    for step, fid in ((2, 30.0), (10, 20.0)):
        d = tmp_path / "eval" / f"step_{step:08d}"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({"fid": fid, "meta": {"total_seconds": 4.0}, "step": step}))
    assert rp.final_metrics(tmp_path) == {"eval/fid": 20.0}  # the newest metrics.json, named as W&B names it


def test_environment_diff_names_each_difference():
    manifest = {"git": {"sha": "abc123", "dirty": False}, "versions": {"torch": "0.0.1", "numpy": "2.0"}}
    lines = rp.environment_diff(manifest, git={"sha": "def456", "dirty": True},
                                versions={"torch": "2.4.0", "numpy": "2.0"})
    assert lines == ["git SHA differs: recorded abc123, now def456",
                     "git dirty state differs: recorded dirty=False, now dirty=True",
                     "version of torch differs: recorded 0.0.1, now 2.4.0"]
    same = rp.environment_diff(manifest, git={"sha": "abc123", "dirty": False},
                               versions={"torch": "0.0.1", "numpy": "2.0"})
    assert same == []


def test_overrides_that_point_at_the_original_are_replaced_and_env_is_cleaned(tmp_path):
    manifest = {"command": ["python", "/src/t2ilab/train.py"], "overrides":
                ["ckpt_path=/old/checkpoints/last.ckpt", "hydra.run.dir=/old", "seed=3", "+paths.run_dir=/old"]}
    new = tmp_path / "new dir"
    assert rp.child_overrides(manifest, new) == ["seed=3", f"hydra.run.dir='{new}'", "ckpt_path=null"]
    with pytest.raises(rp.ReproError, match="--out"):
        rp.child_overrides(manifest, new, ["ckpt_path=/x.ckpt"])
    assert rp.entry_module({"command": ["py", "/venv/bin/t2ilab-eval", "x=1"]}) == "eval"
    env = rp.child_env({"T2ILAB_RUN_NAME": "old", "SLURM_JOB_ID": "7", "WANDB_RUN_ID": "abc", "HOME": "/h"})
    assert env["HOME"] == "/h" and env["WANDB_MODE"] == "offline"
    assert not {"T2ILAB_RUN_NAME", "SLURM_JOB_ID", "WANDB_RUN_ID"} & set(env)


def test_bad_input_is_refused_with_the_reason(original, tmp_path, capsys):
    assert reproduce.main([str(tmp_path)]) == 2
    assert f"{tmp_path}/manifest.json not found: not a t2ilab run dir" in capsys.readouterr().err
    shutil.copy(original / "manifest.json", tmp_path / "manifest.json")
    assert reproduce.main([str(tmp_path), "--dry-run"]) == 2  # no marker: running or killed
    assert "no COMPLETE/FAILED marker" in capsys.readouterr().err
    run_status.mark(tmp_path, "FAILED", "NonFiniteLossError: loss is nan", 7)
    assert reproduce.main([str(tmp_path), "--dry-run"]) == 2
    assert "marked FAILED: NonFiniteLossError: loss is nan (at step 7)" in capsys.readouterr().err
    assert reproduce.main([str(tmp_path), "--dry-run", "--allow-incomplete"]) == 0
    assert "did not complete" in capsys.readouterr().err
    assert reproduce.main([str(original), "--out", str(original / "sub"), "--dry-run"]) == 2
    assert "never written to" in capsys.readouterr().err


@pytest.mark.slow
def test_a_run_without_recorded_metrics_still_reproduces_but_says_there_is_nothing_to_compare(original, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(original, copy, ignore=shutil.ignore_patterns("wandb", "csv"))  # no recorded metrics at all
    r = run("reproduce", str(copy), "--out", str(tmp_path / "rerun"), "--", "logger=none", check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "nothing to compare" in r.stdout and "NOT an exact reproduction" in r.stderr
    assert run_status.status_of(tmp_path / "rerun")["status"] == "COMPLETE"


@pytest.mark.slow
def test_an_eval_run_is_reproduced_through_t2ilab_eval(original, tmp_path):
    small = ["metrics.fid=false", "metrics.kid=false", "metrics.isc=false", "metrics.prc=false",
             "metrics.clip_score=false", "metrics.num_samples=32", "metrics.batch_size=16",
             "metrics.classifier.epochs=1", "metrics.classifier.max_train=256"]
    ev = tmp_path / "eval"
    run("eval", f"ckpt_path={original / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={ev}",
        f"paths.cache_dir={original.parent / 'cache'}", *small)
    r = run("reproduce", str(ev), "--out", str(tmp_path / "again"), check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "-m t2ilab.eval" in r.stdout and "eval/classifier_fd" in r.stdout and "REPRODUCED" in r.stdout
    recorded = json.loads((ev / "metrics.json").read_text())
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert recorded["classifier_fd"] == again["classifier_fd"] and "ckpt_path=null" not in r.stdout


def test_a_resumed_run_is_flagged(tmp_path):
    fresh = {"config": {"ckpt_path": "auto"}}
    assert rp.resume_warning(tmp_path, fresh) is None
    assert "ckpt_path=/a/last.ckpt" in rp.resume_warning(tmp_path, {"config": {"ckpt_path": "/a/last.ckpt"}})
    (tmp_path / "train.log").write_text("[..][t2ilab.train][INFO] - ckpt_path=auto: resuming from /r/last.ckpt\n")
    assert "1 relaunch(es)" in rp.resume_warning(tmp_path, fresh)


def test_a_job_launched_by_submitit_is_reproduced_through_its_task():
    submitit = ["/usr/bin/python", "-u", "-m", "submitit.core._submit", "/sweep/.submitit/7"]
    assert rp.entry_module({"command": submitit, "config": {"task_name": "train"}}) == "train"
    with pytest.raises(rp.ReproError, match="cannot tell which entry point"):
        rp.entry_module({"command": submitit, "config": {}})


def test_the_default_rerun_dir_is_outside_the_sweep(tmp_path):
    import datetime as dt

    from t2ilab.cli.reproduce import default_out_dir

    job = tmp_path / "outputs" / "multiruns" / "2026-12-07" / "03-00-00_ab" / "4"
    when = dt.datetime(2026, 12, 7, 4, 5, 6)
    assert default_out_dir(job, when) == tmp_path / "outputs" / "reproduce" / "2026-12-07_03-00-00_ab_4-repro-20261207-040506"
    single = tmp_path / "outputs" / "runs" / "2026-12-07" / "03-00-00_cd"
    assert default_out_dir(single, when).parent == tmp_path / "outputs" / "reproduce"


def test_a_sweep_jobs_rerun_evaluates_its_final_model_as_the_job_did():
    """A multirun job resolved eval_after=auto to true and recorded it; its overrides do not say so."""
    manifest = {"command": ["python", "/src/t2ilab/train.py", "-m", "seed=1,2"], "overrides": ["seed=1"],
                "config": {"task_name": "train", "eval_after": True}}
    assert rp.child_overrides(manifest, "/tmp/out")[-2:] == ["eval_after=true", "ckpt_path=null"]
    manifest["overrides"] = ["seed=1", "eval_after=false"]  # said on the command line: kept as it was
    assert [o for o in rp.child_overrides(manifest, "/tmp/out") if o.startswith("eval_after")] == ["eval_after=false"]
