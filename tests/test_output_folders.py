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
    return {p.name: p.read_bytes() for p in d.iterdir()}


def test_sample_refuses_a_users_folder_and_changes_nothing(tmp_path):
    from t2ilab.sample import sample

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
