"""Checkpoint files are complete or absent: a failed save removes its partial file and keeps the
previous checkpoint; ``kill -9`` during saving never leaves a truncated checkpoint (issues 11, 12)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from t2ilab.models.atomic_io import AtomicCheckpointIO


def test_a_failed_save_leaves_no_partial_file_and_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, path)
    real_save = torch.save

    def disk_full(obj, f, *a, **k):
        real_save({"half": torch.zeros(1000)}, f)  # some bytes reach the disk, then ...
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match=r"could not write .*last.ckpt \(No space left on device\); "
                                      r"nothing partial was left behind"):
        AtomicCheckpointIO().save_checkpoint({"step": 2}, path)
    with pytest.raises(OSError):
        AtomicCheckpointIO().save_checkpoint({"step": 2}, tmp_path / "step=0000002.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temp, no truncated step file
    assert torch.load(path, weights_only=False) == {"step": 1}


def test_kill_9_while_saving_never_leaves_a_truncated_checkpoint(tmp_path):
    """A child saves a 20 MB checkpoint in a loop (the function the CheckpointIO plugin calls); it is
    killed at two moments; every time the target file is either absent or loads completely."""
    script = textwrap.dedent(f"""
        import torch, sys
        from t2ilab.utils.io import atomic_torch_save
        big = torch.randn(5_000_000)
        print("ready", flush=True)
        for i in range(10**6):
            atomic_torch_save({{"i": i, "w": big}}, {str(tmp_path / "last.ckpt")!r})
    """)
    for delay in (0.1, 0.45):
        p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(delay)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
        target = tmp_path / "last.ckpt"
        if target.exists():
            ck = torch.load(target, weights_only=False)
            assert ck["w"].numel() == 5_000_000
        for stray in tmp_path.glob(".last.ckpt.*.tmp"):  # what a kill leaves: the temp file, never the target
            stray.unlink()
