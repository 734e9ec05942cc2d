"""A grid sweep is checked before any job is launched (issue 12): every swept value is composed and
type-checked in the launching process; one bad value or unknown key stops the sweep with the job's
overrides and the reason, and no sweep dir or job exists afterwards."""

from __future__ import annotations

import pytest
from hydra import initialize_config_dir

from t2ilab.utils.config import CONF_DIR
from t2ilab.utils.sweep_check import SweepError, check_sweep, covering_jobs
from cli_helpers import run


def test_covering_jobs_use_every_value_once_not_the_product():
    jobs = covering_jobs(["debug=fast", "seed=1,2,3", "model=diffusion,vae"])
    assert jobs == [["debug=fast", "seed=1", "model=diffusion"], ["debug=fast", "seed=2", "model=diffusion"],
                    ["debug=fast", "seed=3", "model=diffusion"], ["debug=fast", "seed=1", "model=vae"]]
    assert covering_jobs(["seed=4"]) == [["seed=4"]]


def test_check_sweep_composes_and_type_checks_each_value():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        assert check_sweep("train", ["model=diffusion,gan,vae", "model.lr_warmup_steps=0,10"]) == 4
        with pytest.raises(SweepError, match=r"model.optimizer.lr=abc[\s\S]*must be a number"):
            check_sweep("train", ["seed=1,2", "model.optimizer.lr=1e-4,abc"])
        with pytest.raises(SweepError, match=r"data=shapes,nope|nope"):
            check_sweep("train", ["data=shapes,nope"])


def test_a_bad_sweep_launches_nothing(tmp_path):
    sweep = tmp_path / "sweep"
    r = run("train", "-m", "debug=fast", "seed=1,2", "model.nonexist=3,4", f"hydra.sweep.dir={sweep}",
            f"paths.output_dir={tmp_path / 'out'}", check=False)
    assert r.returncode == 2 and "no job was launched" in r.stderr and "model.nonexist" in r.stderr, r.stderr[-2000:]
    assert not sweep.exists() and not (tmp_path / "out").exists()


def test_a_value_of_the_right_type_but_out_of_range_launches_nothing(tmp_path):
    sweep = tmp_path / "sweep"
    r = run("train", "-m", "debug=fast", "model.cond_drop_prob=0.1,1.5", f"hydra.sweep.dir={sweep}",
            f"paths.output_dir={tmp_path / 'out'}", check=False)
    assert r.returncode == 2 and "no job was launched" in r.stderr, r.stderr[-2000:]
    assert "model.cond_drop_prob=1.5 is out of range: must be in [0, 1)" in r.stderr
    assert not sweep.exists() and not (tmp_path / "out").exists()


def _launcher_cfg(*overrides):
    from hydra import compose, initialize_config_dir

    from t2ilab.utils.config import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_slurm_tasks_follow_the_devices_and_a_mismatch_is_refused_before_submission():
    from t2ilab.utils.sweep_check import SweepError, check_launcher

    cfg = _launcher_cfg("hydra/launcher=slurm", "trainer=gpu")
    assert cfg.hydra.launcher.tasks_per_node == 1 and cfg.hydra.launcher.mem_gb == 32
    check_launcher(cfg)
    ddp = _launcher_cfg("hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "hydra.launcher.gpus_per_node=4")
    assert ddp.hydra.launcher.tasks_per_node == 4 and ddp.hydra.launcher.mem_gb == 128  # memory per GPU
    check_launcher(ddp)
    with pytest.raises(SweepError, match=r"tasks_per_node=2 but trainer.devices=1: Slurm would start 2 processes"):
        check_launcher(_launcher_cfg("hydra/launcher=slurm", "trainer=gpu", "hydra.launcher.tasks_per_node=2"))
    with pytest.raises(SweepError, match=r"trainer.devices=2 but hydra.launcher.gpus_per_node=1"):
        check_launcher(_launcher_cfg("hydra/launcher=slurm", "trainer=gpu", "trainer.devices=2"))
    cpu = _launcher_cfg("hydra/launcher=slurm_cpu")
    assert (cpu.hydra.launcher.gpus_per_node, cpu.hydra.launcher.tasks_per_node, cpu.hydra.launcher.mem_gb) == (0, 1, 4)


def test_a_launcher_without_multirun_says_it_trains_here(tmp_path):
    r = run("train", "hydra/launcher=local", "trainer.max_steps=abc", f"hydra.run.dir={tmp_path / 'run'}",
            "logger=none", check=False)
    assert "hydra/launcher=local takes effect only with -m (multirun)" in r.stdout + r.stderr


@pytest.mark.slow  # two short trainings and a resubmission (~40 s on 2 cores)
def test_a_resubmitted_sweep_skips_its_complete_jobs(tmp_path):
    import json

    from cli_helpers import TINY

    sweep = tmp_path / "sweep"
    args = ["train", "-m", "debug=fast", *TINY, "seed=1,2", "logger=none", "callbacks.sample_grid=null", "eval_after=false",
            f"hydra.sweep.dir={sweep}", f"paths.cache_dir={tmp_path / 'cache'}"]
    run(*args, timeout=900)
    markers = {d.name: (d / "COMPLETE").read_text() for d in sorted(sweep.glob("[0-9]"))}
    ckpts = {d.name: (d / "checkpoints" / "last.ckpt").stat().st_mtime_ns for d in sorted(sweep.glob("[0-9]"))}
    assert set(markers) == {"0", "1"}
    again = run(*args, timeout=900)
    assert again.stdout.count("is COMPLETE (step 4): skipped") == 2, again.stdout[-3000:]
    assert {d: (sweep / d / "COMPLETE").read_text() for d in markers} == markers  # untouched
    assert {d: (sweep / d / "checkpoints" / "last.ckpt").stat().st_mtime_ns for d in ckpts} == ckpts
    forced = run(*[a for a in args if a != "seed=1,2"], "seed=1", "skip_complete=false", timeout=900)
    assert "skipped" not in forced.stdout and json.loads((sweep / "0" / "COMPLETE").read_text())["status"] == "COMPLETE"


def test_a_rejected_slurm_submission_is_a_user_error_and_its_empty_sweep_dir_goes(tmp_path):
    """submitit raises FailedJobError from sbatch's non-zero exit; the launch had only created the sweep dir."""
    import subprocess

    from submitit.core.utils import FailedJobError

    from t2ilab.errors import user_error
    from t2ilab.utils import sweep_check

    def rejection(stderr):
        try:
            try:
                raise subprocess.CalledProcessError(1, ["/usr/bin/sbatch", "job.sh"], stderr=stderr)
            except subprocess.CalledProcessError as cpe:
                raise FailedJobError(stderr) from cpe
        except FailedJobError as e:
            return e

    sweep = tmp_path / "sweep"
    sweep_check._SWEEP_DIR.update(path=str(sweep), existed=False)
    (sweep / ".submitit" / "%j").mkdir(parents=True)
    err = sweep_check.rejected_submission(rejection("sbatch: error: Invalid generic resource (gres) specification"))
    assert err is not None and user_error(err) is err
    assert "Invalid generic resource" in str(err) and "hydra/launcher=slurm_cpu" in str(err)
    assert not sweep.exists()
    # a sweep dir that already held job output (a resubmitted sweep) is never removed
    (sweep / "0").mkdir(parents=True)
    sweep_check._SWEEP_DIR.update(path=str(sweep), existed=False)
    assert "was kept" in str(sweep_check.rejected_submission(rejection("sbatch: error: invalid partition")))
    assert (sweep / "0").is_dir()
    # a job's own failure (no sbatch behind it) is not a rejected submission
    assert sweep_check.rejected_submission(FailedJobError("Job (task=0) failed during processing")) is None
    sweep_check._SWEEP_DIR.clear()
