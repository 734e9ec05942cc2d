"""The one run reader (tracking/run_metrics.py) behind ``report`` and ``reproduce``: the run dir's own
files win over W&B, metrics.json keys are named as W&B names them, and an unreadable W&B log is a note,
never the loss of the run's other metrics."""

from __future__ import annotations

import json

from t2ilab.reporting.runs import load_run
from t2ilab.tracking.reproduction import final_metrics
from t2ilab.tracking.run_metrics import read_metrics


def _run_dir(tmp_path, corrupt_wandb: bool = True):
    d = tmp_path / "run"
    (d / "eval" / "step_00000010").mkdir(parents=True)
    (d / "eval" / "step_00000010" / "metrics.json").write_text(json.dumps({"classifier_fd": 12.5, "step": 10}))
    (d / "csv" / "version_0").mkdir(parents=True)
    (d / "csv" / "version_0" / "metrics.csv").write_text(
        "step,train/loss,eval/classifier_fd,epoch\n0,2.0,,0\n10,1.0,99.0,0\n")
    if corrupt_wandb:
        w = d / "wandb" / "offline-run-20260101_000000-abc"
        w.mkdir(parents=True)
        (w / "run-abc.wandb").write_bytes(b"not a W&B log at all")
    (d / "manifest.json").write_text(json.dumps({"seed": 1, "config": {"seed": 1, "model": {"lr": 0.1}}}))
    (d / "COMPLETE").write_text(json.dumps({"status": "COMPLETE"}))
    return d


def test_own_files_win_and_a_corrupt_wandb_log_is_a_note(tmp_path):
    m = read_metrics(_run_dir(tmp_path))
    assert m.final == {"eval/classifier_fd": 12.5, "train/loss": 1.0}  # metrics.json over the CSV's 99.0
    assert m.history["train/loss"] == [(0.0, 2.0), (10.0, 1.0)] and "epoch" not in m.final
    assert len(m.notes) == 1 and "unreadable W&B run" in m.notes[0]


def test_report_and_reproduce_read_the_same_metrics(tmp_path):
    d = _run_dir(tmp_path)
    run = load_run(d)
    assert not isinstance(run, str), run  # the corrupt W&B log no longer drops the run from a report
    assert run.final == final_metrics(d) == {"eval/classifier_fd": 12.5, "train/loss": 1.0}
