"""Output folders are never silently changed: ``sample`` refuses a folder holding files unless
``overwrite=true``, and then removes only what an earlier export listed in its own prompts.jsonl; the
sample writer never deletes a file it did not write."""

from __future__ import annotations

import json

import pytest
import torch
from hydra import compose, initialize_config_dir

from t2ilab.evaluation.images import SAMPLE_INDEX, SampleWriter, claim_sample_dir
from t2ilab.utils.config import CONF_DIR


def user_folder(tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    for name in ("000000.png", "000007.png", "notes.txt"):
        (d / name).write_bytes(name.encode())
    return d


def contents(d):
    return {p.name: p.read_bytes() if p.is_file() else "dir" for p in d.iterdir()}


def test_sample_refuses_a_users_folder_and_changes_nothing(tmp_path):
    from t2ilab.cli.sample import sample

    d = user_folder(tmp_path)
    before = contents(d)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("sample", overrides=["ckpt_path=/does/not/exist.ckpt", f"out_dir={d}", "prompts=[x]"])
    with pytest.raises(FileExistsError, match=r"already holds 3 file\(s\).*nothing was written.*overwrite=true"):
        sample(cfg)
    assert contents(d) == before
    # overwrite=true does not make someone else's sample-named files ours
    with pytest.raises(FileExistsError, match=r"no t2ilab export listed \(000000.png, 000007.png\)"):
        claim_sample_dir(d, overwrite=True)
    assert contents(d) == before


def test_overwrite_replaces_only_an_earlier_exports_files(tmp_path):
    d = tmp_path / "samples"
    w = SampleWriter(d)
    w.write_images(torch.rand(3, 3, 4, 4), [0, 1, 2])
    w.write_index(["a", "a", "b"], seed=0, sampling={})
    (d / "notes.txt").write_text("keep me")
    grid = tmp_path / "samples_grid.png"
    grid.write_bytes(b"old grid")
    with pytest.raises(FileExistsError):
        claim_sample_dir(d, overwrite=False)
    claim_sample_dir(d, overwrite=True)
    assert sorted(p.name for p in d.iterdir()) == ["notes.txt"] and not grid.exists()


def test_the_writer_removes_stale_samples_it_listed_and_nothing_else(tmp_path):
    d = tmp_path / "s"
    w = SampleWriter(d)
    w.write_images(torch.rand(4, 3, 4, 4), range(4))
    w.write_index(["p"] * 4, seed=0, sampling={})
    (d / "000009.png").write_bytes(b"someone else's")  # never listed by an index
    w.write_images(torch.rand(2, 3, 4, 4), range(2))
    w.write_index(["p"] * 2, seed=0, sampling={})  # a smaller export: 000002/000003 are stale
    assert sorted(p.name for p in d.iterdir()) == ["000000.png", "000001.png", "000009.png", SAMPLE_INDEX]
    assert [json.loads(line)["file"] for line in (d / SAMPLE_INDEX).read_text().splitlines()] == \
        ["000000.png", "000001.png"]


@pytest.mark.parametrize("tool", ["eval", "roundtrip"])
def test_eval_and_roundtrip_refuse_a_folder_holding_another_runs_files(tmp_path, tool):
    """``out_dir=<a training run dir>`` would overwrite its manifest.json and config: refused before any work."""
    from t2ilab.cli.eval import evaluate
    from t2ilab.cli.roundtrip import roundtrip

    d = tmp_path / "train_run"
    (d / "checkpoints").mkdir(parents=True)
    for name in ("manifest.json", "config_resolved.yaml", "COMPLETE"):
        (d / name).write_text(f"the training's {name}")
    before = contents(d)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(tool, overrides=["ckpt_path=/does/not/exist.ckpt", f"out_dir={d}",
                                       f"paths.run_dir={tmp_path / 'run'}"])
    with pytest.raises(FileExistsError, match=r"already holds 4 file\(s\).*nothing was written.*overwrite=true"):
        (evaluate if tool == "eval" else roundtrip)(cfg)
    assert contents(d) == before


def test_an_eval_out_dir_replaces_only_its_own_files_and_ignores_what_hydra_wrote(tmp_path):
    from t2ilab.utils.io import claim_run_out_dir

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "eval.log").write_text("log of this launch")
    assert claim_run_out_dir(run, False, ("samples",), run_dir=run, task_name="eval") == run  # the default: accepted
    (run / "metrics.json").write_text("{}")
    (run / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="metrics.json, notes.txt"):
        claim_run_out_dir(run, False, ("samples",), run_dir=run, task_name="eval")
    claim_run_out_dir(run, True, ("samples",), run_dir=run, task_name="eval")
    assert not (run / "metrics.json").exists() and (run / "notes.txt").read_text() == "mine"
    assert (run / "eval.log").exists() and (run / ".hydra").is_dir()
