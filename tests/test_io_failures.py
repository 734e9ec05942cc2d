"""Failures around files: a full disk while torch writes a checkpoint is reported as such (no internal
torch error), and ``ckpt_path=auto`` resumes from the newest complete checkpoint even when the process
died between writing ``step=N.ckpt`` and ``last.ckpt``."""

from __future__ import annotations

import pytest
import torch

from t2ilab.utils.io import atomic_torch_save


def test_a_failed_torch_write_names_the_file_and_the_free_space(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"the earlier checkpoint")

    def full_disk(obj, f, *a, **k):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 123 vs 45")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match=r"could not write .*last.ckpt: torch's file writer failed .* MiB are free on "
                                      r".*full disk or quota"):
        atomic_torch_save({"x": 1}, target)
    assert target.read_bytes() == b"the earlier checkpoint"  # intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left


def test_auto_resume_takes_the_newest_complete_checkpoint(tmp_path):
    from t2ilab.cli.train import _newest_checkpoint

    ck = tmp_path / "checkpoints"
    ck.mkdir()
    assert _newest_checkpoint(ck) is None
    torch.save({"global_step": 1000}, ck / "last.ckpt")
    torch.save({"global_step": 1000}, ck / "step=0001000.ckpt")
    assert _newest_checkpoint(ck) == ck / "last.ckpt"
    torch.save({"global_step": 2000}, ck / "step=0002000.ckpt")  # killed before last.ckpt was rewritten
    assert _newest_checkpoint(ck) == ck / "step=0002000.ckpt"
    (ck / "last.ckpt").write_bytes(b"not a checkpoint")
    assert _newest_checkpoint(ck) == ck / "step=0002000.ckpt"
