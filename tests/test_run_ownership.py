"""One owner per run dir, and a refused launch changes nothing: a second launch into a run dir in use
fails at once naming the holder; a relaunch whose config does not fit the run (another family, another
seed) is refused before anything is written — manifest, config and markers stay byte-identical."""

from __future__ import annotations

import os
import socket

import pytest

from cli_helpers import TINY, copy_of, run
from t2ilab.tracking import run_lock

KEPT = ("manifest.json", "config_resolved.yaml", "config_tree.txt", "COMPLETE", "wandb_id")


def snapshot(run_dir):
    return {name: (run_dir / name).read_bytes() for name in KEPT if (run_dir / name).exists()}


def test_a_second_launch_into_a_run_dir_in_use_fails_at_once_naming_the_holder(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with run_lock.owned(run_dir):  # this test process is "the other launch"
        r = run("train", "debug=fast", f"hydra.run.dir={run_dir}", "logger=none", check=False, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 2, out[-3000:]
    assert f"pid {os.getpid()} on {socket.gethostname()}" in r.stderr and "T2ILAB_RUN_NAME" in r.stderr
    assert "Traceback" not in out
    assert not (run_dir / "manifest.json").exists() and not (run_dir / "FAILED").exists()  # nothing written
    with run_lock.owned(run_dir):  # released by the refused process (and by us): free again
        pass


def test_the_lock_is_released_when_the_owner_ends():
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        code = ("import sys; from t2ilab.tracking import run_lock; "
                "cm = run_lock.owned(sys.argv[1]); cm.__enter__(); print('held', flush=True); "
                "import os; os._exit(0)")  # ends without releasing: the OS does
        subprocess.run([sys.executable, "-c", code, d], check=True, timeout=60, capture_output=True)
        with run_lock.owned(d):
            pass


@pytest.mark.slow  # a training + three refused relaunches (~20 s on 2 cores); CI runs it (.ci/run leg 1)
def test_a_refused_relaunch_leaves_the_run_as_it_was(finished_run, tmp_path):
    run_dir = copy_of(finished_run, tmp_path / "run")
    common = ["debug=fast", *TINY, f"hydra.run.dir={run_dir}", f"paths.cache_dir={tmp_path / 'cache'}",
              "logger=none", "callbacks.sample_grid=null"]
    before = snapshot(run_dir)
    assert "COMPLETE" in before and "manifest.json" in before
    for extra, says in ((["data.image_size=16"], "does not fit the composed config"),
                        (["seed=7"], "seed: run 3 != now 7"),
                        (["model.optimizer.lr=0.001"], "model.optimizer.lr: run")):
        r = run("train", *common, *extra, check=False, timeout=300)
        assert r.returncode == 2, (r.stdout + r.stderr)[-3000:]
        assert says in r.stderr and "Traceback" not in r.stdout + r.stderr
        assert snapshot(run_dir) == before, extra  # manifest, config, marker, W&B id: byte-identical
        assert not (run_dir / "FAILED").exists()
    # the hint quotes the original run's overrides, not the rejected ones
    r = run("train", *common, "data.image_size=16", check=False, timeout=300)
    assert "its overrides were" in r.stderr
    hint = r.stderr.split("its overrides were", 1)[1]
    assert "seed=3" in hint and "image_size=16" not in hint


def test_slurm_identity_names_the_array_task_and_the_restart(monkeypatch):
    from t2ilab.tracking.launch import describe_slurm, slurm_identity, slurm_job
    from t2ilab.utils.resolvers import run_name

    for var in ("T2ILAB_RUN_NAME", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(var, raising=False)
    env = {"SLURM_JOB_ID": "1004", "SLURM_ARRAY_JOB_ID": "1", "SLURM_ARRAY_TASK_ID": "3", "SLURM_RESTART_COUNT": "2"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    ident = slurm_identity()
    assert ident["job"] == "1_3" and ident["job_id"] == "1004" and ident["restart_count"] == 2
    assert slurm_job() == "1_3" and run_name() == "slurm/1_3"  # not the bare job id: tasks never share a run dir
    assert describe_slurm(ident) == "Slurm job 1_3 (restart 2)"
    assert slurm_identity({}) is None and slurm_job({"SLURM_JOB_ID": "7"}) == "7"


def test_the_manifest_records_the_users_command_not_submitits(monkeypatch):
    """A submitit job's argv is ``submitit.core._submit <folder>``; the entry point's command travels in the
    environment Slurm exports to the job, and the manifest records it with the full Slurm identity."""
    import sys

    from t2ilab.tracking.launch import remember_command
    from t2ilab.tracking.manifest import build_manifest

    remember_command(["-m", "t2ilab.train", "-m", "seed=1,2", "hydra/launcher=slurm"])
    monkeypatch.setattr(sys, "argv", ["/x/submitit/core/_submit.py", "/sweep/.submitit/5_1"])
    for k, v in {"SLURM_JOB_ID": "6", "SLURM_ARRAY_JOB_ID": "5", "SLURM_ARRAY_TASK_ID": "1"}.items():
        monkeypatch.setenv(k, v)
    try:
        m = build_manifest({}, 1)
    finally:
        os.environ.pop("T2ILAB_COMMAND", None)
    assert m["command"][1:] == ["-m", "t2ilab.train", "-m", "seed=1,2", "hydra/launcher=slurm"]
    assert m["process_command"][1:] == sys.argv
    assert m["slurm_job_id"] == "5_1" and m["slurm"]["array_task_id"] == "1" and m["slurm"]["restart_count"] == 0
