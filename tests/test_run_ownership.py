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
                        (["seed=7"], "holds a run with seed=3")):
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
