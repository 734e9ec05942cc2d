"""Resume without holes (issue 24, item 5): W&B rows go out with an explicit, monotonic step in step order (no row
dropped, no ``_step`` reset in a resumed segment); a preemption's SIGTERM to the whole job — which kills wandb's
service process too — still leaves a W&B history that reaches the interrupt checkpoint's step; the resumed
launch continues the same W&B run, and the reader merges the segments into one gapless history."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cli_helpers import TINY, run
from t2ilab.compat.wandb import read_offline_run, run_dir_runs


class _Experiment:
    """Stands in for a wandb run: records ``log`` calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict, int | None]] = []

    def define_metric(self, *args, **kwargs) -> None:
        pass

    def log(self, data: dict, step: int | None = None) -> None:
        self.calls.append((dict(data), step))


def test_rows_reach_wandb_in_step_order_with_the_step_they_were_logged_at(tmp_path):
    from t2ilab.compat.lightning import WandbLogger

    lg = WandbLogger(project="t2ilab-test", save_dir=str(tmp_path), offline=True)
    lg._experiment = exp = _Experiment()
    # Lightning's order within a batch k: lr monitor (k) at batch start, callbacks at global_step k + 1 (sample
    # grid, evaluation), then the batch's training metrics (k), validation (k)
    for k in range(6):
        lg.log_metrics({"lr-AdamW": 1e-3}, step=k)
        if k % 2 == 1:
            lg.log_metrics({"eval/fd": 10.0 - k}, step=k + 1)
        lg.log_metrics({"train/loss": float(k)}, step=k)
        if k % 2 == 1:
            lg.log_metrics({"val/loss": float(k)}, step=k)
    assert max(s for _, s in exp.calls) <= 4  # the newest two steps are held back ...
    lg.flush()  # ... until flushed (finalize / finish_wandb)
    steps = [s for _, s in exp.calls]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # one call per row, never a lower step
    assert all(data["trainer/global_step"] == s for data, s in exp.calls)  # wandb's _step is the trainer's step
    rows = {s: data for data, s in exp.calls}
    assert [rows[k]["train/loss"] for k in range(6)] == [float(k) for k in range(6)]  # none dropped
    assert rows[2]["eval/fd"] == 9.0 and rows[6]["eval/fd"] == 5.0 and rows[5]["val/loss"] == 5.0
    lg.log_metrics({"late": 1.0}, step=0)  # later than one step: joins the last row sent instead of being lost
    lg.flush()
    assert exp.calls[-1][1] == 6 and exp.calls[-1][0]["late"] == 1.0
    assert [s for s, _ in lg.sent][:3] == [0, 1, 2] and lg.sent[0][1] == {"lr-AdamW": 1e-3, "train/loss": 0.0}


def _descendants(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in task.read_text().split():
            out += [int(child), *_descendants(int(child))]
    return out


def _steps(history: list[dict], key: str) -> list[int]:
    return [int(r["trainer/global_step"]) for r in history if key in r]


@pytest.mark.slow
def test_a_job_killed_by_sigterm_keeps_its_wandb_history_and_the_resume_continues_it(tmp_path):
    run_dir, max_steps = tmp_path / "run", 30
    args = ["debug=fast", *TINY, f"trainer.max_steps={max_steps}", "trainer.val_check_interval=5",
            "callbacks.model_checkpoint.every_n_train_steps=3", "callbacks.sample_grid.every_n_steps=10",
            f"hydra.run.dir={run_dir}", f"paths.cache_dir={tmp_path / 'c'}"]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = subprocess.Popen([sys.executable, "-m", "t2ilab.train", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 180
    while not (run_dir / "checkpoints" / "step=0000003.ckpt").exists():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.1)
    service = [p for p in _descendants(proc.pid) if "wandb" in Path(f"/proc/{p}/comm").read_text()]
    assert service, "no wandb-core process under the training process"
    # what Slurm does: every process of the job gets the signal, wandb's service (its own session) included
    os.killpg(proc.pid, signal.SIGTERM)
    for pid in service:
        os.kill(pid, signal.SIGTERM)
    rc = proc.wait(timeout=120)
    err = proc.stderr.read()
    assert rc == 143, err[-3000:]
    cut = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]
    assert 3 <= cut < max_steps
    assert "could not finish the W&B run cleanly" in (run_dir / "train.log").read_text()  # the service was killed
    first = run_dir_runs(run_dir)  # the killed segment and the one written for what its service lost
    trained = sorted(s for seg in first for s in _steps(seg["history"], "train/loss"))
    assert trained == list(range(cut))  # every batch in the checkpoint is in the W&B history, once
    assert first[-1]["exit_code"] == 143 and "SIGTERM" in first[-1]["summary"]["failure"]

    run("train", *args, timeout=600)  # ckpt_path=auto: resumes from last.ckpt, same W&B run
    logged = read_offline_run(run_dir)
    assert {seg["id"] for seg in run_dir_runs(run_dir)} - {None} == {(run_dir / "wandb_id").read_text().strip()}
    assert logged["segments"] == len(first) + 1 and logged["exit_code"] == 0
    steps = [int(r["trainer/global_step"]) for r in logged["history"] if "trainer/global_step" in r]
    assert steps == sorted(steps)  # no step goes backwards across the segments
    assert _steps(logged["history"], "train/loss") == list(range(max_steps))  # no gap, no repeat
    assert all(int(r["_step"]) == int(r["trainer/global_step"]) for r in logged["history"] if "_step" in r)


def test_the_killed_services_exit_code_never_becomes_the_jobs(monkeypatch, tmp_path):
    """``wandb.teardown()`` of a dead service may ``sys.exit(<service exit code>)``: rewriting the lost rows must
    survive that, or a preempted job exits 1 instead of 143 (a race seen in CI)."""
    from types import SimpleNamespace

    import wandb

    from t2ilab.compat.wandb import finish_lost_tail

    def teardown(*args, **kwargs):
        raise SystemExit(1)

    calls = []

    class Segment:
        summary: dict = {}

        def log(self, row, step):
            calls.append(step)

        def finish(self, exit_code):
            calls.append(("finish", exit_code))

    monkeypatch.setattr(wandb, "teardown", teardown)
    monkeypatch.setattr(wandb, "init", lambda **kwargs: Segment())
    settings = SimpleNamespace(sync_file=str(tmp_path / "missing.wandb"), root_dir=str(tmp_path), mode="offline")
    run = SimpleNamespace(settings=settings, id="abc", project="p", entity=None, name="n", group=None,
                          job_type=None, tags=(), config={})
    assert finish_lost_tail(run, [(0, {"a": 1.0}), (1, {"a": 2.0})], 143, "SIGTERM") == 2
    assert calls == [0, 1, ("finish", 143)]
