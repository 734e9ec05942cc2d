"""End to end through the real entry points: ``python -m t2ilab.train`` (W&B offline) -> run dir,
manifest, checkpoint, logged values read back from the offline W&B run -> resume (same W&B run,
EMA kept) -> ``python -m t2ilab.sample`` (files identical to ``t2ilab.eval``'s sample export); bad input errors;
run-dir uniqueness."""

from __future__ import annotations

import json
from importlib import metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from PIL import Image

from t2ilab.utils.config import CONF_DIR

from cli_helpers import TINY, run, wandb_run  # noqa: E402  (shared with other subprocess tests)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("e2e")
    run_dir = root / "run"
    run("train", "debug=fast", *TINY, f"hydra.run.dir={run_dir}", f"paths.cache_dir={root / 'cache'}",
        "tags=[e2e]")
    return run_dir


def test_train_writes_config_manifest_checkpoints_and_grid(trained):
    assert "model" in (trained / "config_tree.txt").read_text()
    resolved = yaml.safe_load((trained / "config_resolved.yaml").read_text())
    assert resolved["model"]["net"]["base_channels"] == 16 and resolved["paths"]["run_dir"] == str(trained)
    manifest = json.loads((trained / "manifest.json").read_text())
    assert manifest["seed"] == 3 and "model.net.base_channels=16" in manifest["overrides"]
    assert manifest["versions"]["torch"] == metadata.version("torch")
    assert set(manifest["git"]) >= {"sha", "dirty"}
    assert {p.name for p in (trained / "checkpoints").glob("*.ckpt")} >= {"last.ckpt", "step=0000004.ckpt"}
    grid = Image.open(trained / "samples" / "grid_step0000004.png")
    assert grid.width > 32 * 2 and grid.height > 32 * 2  # 2 prompts x 2 images + caption strip
    done = json.loads((trained / "COMPLETE").read_text())  # a finished run says so; FAILED never coexists
    assert done["step"] == 4 and not (trained / "FAILED").exists()


def test_wandb_offline_run_has_the_logged_values_and_config(trained):
    from t2ilab.compat.wandb import read_offline_run

    logged = read_offline_run(wandb_run(trained))
    summary, config = logged["summary"], logged["config"]
    assert logged["id"] == wandb_run(trained).name.rsplit("-", 1)[-1]
    for key in ("train/loss", "val/loss", "trainer/global_step"):
        assert key in summary, sorted(summary)
    assert summary["trainer/global_step"] >= 3 and 0 < summary["train/loss"] < 10
    assert summary["samples/grid/_type"].startswith("images")  # the captioned grid, logged as an image
    assert len([row for row in logged["history"] if "train/loss" in row]) >= 3
    assert config["model"]["net"]["base_channels"] == 16
    assert config["manifest"]["seed"] == 3 and config["manifest"]["git"]["sha"]
    assert logged["exit_code"] == 0


def test_resume_continues_the_same_wandb_run_and_keeps_ema(trained, tmp_path):
    from t2ilab.models.checkpoint import read_metadata

    last = trained / "checkpoints" / "last.ckpt"
    ckpt, meta = read_metadata(last)
    first_id = wandb_run(trained).name.rsplit("-", 1)[-1]
    assert meta["wandb_id"] == first_id
    resumed = tmp_path / "resumed"
    run("train", "debug=fast", *TINY, "trainer.max_steps=6", f"ckpt_path={last}", f"hydra.run.dir={resumed}",
        f"paths.cache_dir={trained.parent / 'cache'}")
    assert wandb_run(resumed).name.endswith(first_id)  # same W&B run id, not a new run
    new, _ = read_metadata(resumed / "checkpoints" / "last.ckpt")
    assert new["global_step"] == 6
    # EMA continued from the saved average (counter kept), not restarted from the raw weights
    assert int(new["state_dict"]["ema.n_averaged"]) == int(ckpt["state_dict"]["ema.n_averaged"]) + 2


def folder(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_sample_writes_pngs_prompts_and_grid_reproducibly(trained, tmp_path):
    out = tmp_path / "samples"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n\na blue square\n")
    run("sample", f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}", f"prompts_file={prompts}",
        f"out_dir={out}", "num_per_prompt=2", "seed=5", "sampling={num_steps: 2, guidance_scale: 2.0}",
        f"hydra.run.dir={tmp_path / 'hydra'}")
    rows = [json.loads(line) for line in (out / "prompts.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["a red circle"] * 2 + ["a blue square"] * 2
    assert [(r["file"], r["index"], r["seed"]) for r in rows] == [(f"{i:06d}.png", i, 5 + i) for i in range(4)]
    assert all(r["sampling"]["num_steps"] == 2 and r["sampling"]["guidance_scale"] == 2.0 for r in rows)
    for r in rows:
        assert Image.open(out / r["file"]).size == (32, 32)
    # an image folder as FID tools read it: sample PNGs + prompts.jsonl only; the grid lies beside it
    assert sorted(p.name for p in out.iterdir()) == [r["file"] for r in rows] + ["prompts.jsonl"]
    assert (tmp_path / "samples_grid.png").is_file()
    # the same call in-process with a different batch size gives the same files, byte for byte
    from t2ilab.cli.sample import sample

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("sample", overrides=[f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}",
                                           "prompts=[a red circle,a blue square]", f"out_dir={tmp_path / 'again'}",
                                           "num_per_prompt=2", "seed=5", "batch_size=3", "device=cpu",
                                           "sampling={num_steps: 2, guidance_scale: 2.0}"])
    again = sample(cfg)
    assert folder(again) == folder(out)


def eval_export(trained: Path, out: Path, *extra: str) -> list[str]:
    """``metrics.save_samples=true`` eval overrides without feature networks (only the export)."""
    off = [f"metrics.{m}=false" for m in ("fid", "kid", "isc", "prc", "clip_score", "prompt_accuracy",
                                          "classifier_fd")]
    return [f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}", f"out_dir={out}", "logger=none",
            f"paths.cache_dir={trained.parent / 'cache'}", "metrics.num_samples=5", "metrics.batch_size=2",
            "metrics.seed=7", "metrics.save_samples=true", *off, *extra]


def sample_like_eval(trained: Path, eval_dir: Path, tmp_path: Path) -> Path:
    """``python -m t2ilab.sample`` of the eval export's prompts, same seed, another batch size."""
    rows = [json.loads(line) for line in (eval_dir / "samples" / "prompts.jsonl").read_text().splitlines()]
    (tmp_path / "eval_prompts.txt").write_text("".join(r["prompt"] + "\n" for r in rows))
    out = tmp_path / "sampled"
    run("sample", f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}", f"prompts_file={tmp_path / 'eval_prompts.txt'}",
        f"out_dir={out}", "num_per_prompt=1", "seed=7", "batch_size=3", f"paths.cache_dir={trained.parent / 'cache'}",
        f"hydra.run.dir={tmp_path / 'hydra'}")
    return out


def assert_same_samples(eval_samples: Path, sampled: Path) -> None:
    exported, written = folder(eval_samples), folder(sampled)
    assert sorted(exported) == sorted(written) == [f"{i:06d}.png" for i in range(5)] + ["prompts.jsonl"]
    assert {k: v for k, v in exported.items() if k.endswith(".png")} == \
        {k: v for k, v in written.items() if k.endswith(".png")}
    ev_rows = [json.loads(line) for line in exported["prompts.jsonl"].decode().splitlines()]
    sample_rows = [json.loads(line) for line in written["prompts.jsonl"].decode().splitlines()]
    assert [{k: v for k, v in r.items() if k != "label"} for r in ev_rows] == sample_rows  # one schema (+ label)


def test_eval_export_equals_sample_entry_point(trained, tmp_path):
    """``t2ilab.eval`` (in-process) exports the files ``python -m t2ilab.sample`` writes for its prompts."""
    from t2ilab.cli.eval import evaluate

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=eval_export(trained, tmp_path / "eval", f"paths.run_dir={tmp_path / 'eval'}"))
    evaluate(cfg)
    assert_same_samples(tmp_path / "eval" / "samples", sample_like_eval(trained, tmp_path / "eval", tmp_path))


@pytest.mark.slow  # two more subprocesses
def test_eval_entry_point_export_equals_sample_entry_point(trained, tmp_path):
    run("eval", *eval_export(trained, tmp_path / "eval"), f"hydra.run.dir={tmp_path / 'eval'}")
    assert_same_samples(tmp_path / "eval" / "samples", sample_like_eval(trained, tmp_path / "eval", tmp_path))


def sample_cfg(*overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("sample", overrides=list(overrides))


def test_sample_rejects_missing_or_empty_prompts(trained, tmp_path):
    from t2ilab.cli.sample import sample

    ckpt = f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}"
    with pytest.raises(ValueError, match="no prompts given"):
        sample(sample_cfg(ckpt, f"out_dir={tmp_path}"))
    with pytest.raises(ValueError, match=r"positions \[1\] are empty"):
        sample(sample_cfg(ckpt, f"out_dir={tmp_path}", "prompts=['a red circle','  ']"))


def test_sample_and_eval_refuse_overrides_that_do_not_fit_the_checkpoint(trained, tmp_path):
    from t2ilab.cli.eval import evaluate
    from t2ilab.cli.sample import sample

    ckpt = f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}"
    with pytest.raises(ValueError, match=r"does not fit the sample overrides:\n  encoder.model_name: "
                                         r"checkpoint 'clip-tiny' != now 'ViT-B-32'\ndrop these overrides"):
        sample(sample_cfg(ckpt, f"out_dir={tmp_path}", "prompts=[x]", "encoder={model_name: ViT-B-32}"))
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=[ckpt, f"out_dir={tmp_path}", "+data.image_size=64", "logger=none",
                                         f"paths.cache_dir={tmp_path}"])
    with pytest.raises(ValueError, match=r"data.image_size: checkpoint 32 != now 64"):
        evaluate(cfg)
    assert not list(tmp_path.glob("*.png")) and not (tmp_path / "metrics.json").exists()


def test_unwritable_out_dir_fails_before_any_work(tmp_path):
    from t2ilab.cli.sample import sample

    blocker = tmp_path / "a_file"
    blocker.write_text("")  # a directory cannot be created under a file (holds for root too)
    with pytest.raises(PermissionError, match=r"out_dir=.*a_file/sub is not a writable directory.*out_dir="):
        sample(sample_cfg("ckpt_path=/does/not/exist.ckpt", f"out_dir={blocker / 'sub'}", "prompts=[x]"))


def test_two_launches_in_the_same_second_get_different_run_dirs(tmp_path):
    """Hydra creates the run dir before the job fails on the missing checkpoint: enough to see it."""
    env = {**os.environ, "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "t2ilab.sample", "ckpt_path=/does/not/exist.ckpt", "prompts=[x]",
           f"paths.output_dir={tmp_path}"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert all("does not exist" in e for e in errs), errs
    dirs = sorted(p for p in (tmp_path / "runs").glob("*/*") if p.is_dir())
    assert len(dirs) == 2 and dirs[0].name != dirs[1].name, dirs
    for d in dirs:  # a failed command's run dir says why it failed
        assert "does not exist" in json.loads((d / "FAILED").read_text())["reason"]


def test_a_failing_compose_leaves_no_run_dir(tmp_path):
    r = run("train", "model=bogus", f"hydra.run.dir={tmp_path / 'run'}", check=False, timeout=120)
    assert r.returncode != 0 and "Available options in 'model'" in r.stderr
    assert not (tmp_path / "run").exists()


def test_help_is_a_short_page_with_groups_and_examples():
    out = run("train", "--help", timeout=120).stdout
    assert "Examples:" in out and "python -m t2ilab.train experiment=quickstart" in out
    assert "model: autoencoder, diffusion, gan, latent_diffusion, vae" in out and "README.md" in out
    assert "prompt_expansion: lm, none, templates" in out
    assert len(out.splitlines()) < 40  # not Hydra's full config dump


def test_sigterm_during_sample_exits_143_and_marks_the_run_failed(trained, tmp_path):
    import signal
    import time

    run_dir, out = tmp_path / "run", tmp_path / "run" / "samples"
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "t2ilab.sample", f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}",
                             "prompts=[a red circle]", "num_per_prompt=2000", "batch_size=4", f"hydra.run.dir={run_dir}",
                             f"paths.cache_dir={trained.parent / 'cache'}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not out.is_dir() and time.time() < deadline and proc.poll() is None:  # out_dir exists: sampling began
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    failed = json.loads((run_dir / "FAILED").read_text())
    assert "SIGTERM" in failed["reason"]
