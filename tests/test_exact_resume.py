"""Complete resume (issue 12): for every family, N steps uninterrupted == k steps, ``kill -9``,
relaunch into the same run dir (``ckpt_path=auto``) up to N — bit-identical weights and EMA on CPU.
A second test ends the process *mid-batch* (as a Slurm preemption does): the interrupt checkpoint
records the state before that batch, so the resume is exact too. Covers RNG state, data-order position inside an epoch (k is mid-epoch, N crosses an epoch),
optimiser/LR/EMA state, validation in between (it must not consume training randomness), the
stable run dir and the same W&B run id."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

KILLER = """
import os, signal
import lightning as L

class KillAt(L.Callback):
    '''SIGKILL the process right before the batch after global step `step` (its checkpoint is written).'''
    def __init__(self, step):
        self.step = step
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)

class ExitMidBatch(L.Callback):
    '''End the process inside the batch after global step `step`, before its update -- what submitit's
    USR2 handler does on a Slurm preemption (requeue, then sys.exit(-1)).'''
    def __init__(self, step):
        self.step = step
    def on_before_backward(self, trainer, module, loss):
        if trainer.global_step == self.step:
            raise SystemExit(-1)
"""
TINY = {
    "diffusion": ["model.net.base_channels=8", "model.net.channel_mult=[1,2]", "model.net.num_res_blocks=1",
                  "model.net.attn_resolutions=[16]", "model.net.heads=1", "model.sampling.num_steps=2"],
    "gan": ["model.generator.base_channels=8", "model.generator.max_channels=16",
            "model.discriminator.base_channels=8", "model.discriminator.max_channels=16", "model.diffaug=color"],
    "vae": ["model.net.base_channels=8", "model.net.max_channels=16"],
}
N, K = 6, 3  # 64 images / batch 16 = 4 batches per epoch: K is mid-epoch, N is in the second epoch


def train(tmp_path: Path, run_dir: Path, family: str, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    args = [sys.executable, "-m", "t2ilab.train", f"model={family}", "debug=fast", *TINY[family],
            "data.num_train=64", "data.num_val=16", "data.batch_size=16", f"trainer.max_steps={N}",
            "trainer.deterministic=true", "trainer.val_check_interval=2", "model.cond_drop_prob=0.2",
            "callbacks.model_checkpoint.every_n_train_steps=1", "callbacks.sample_grid.every_n_steps=100",
            f"hydra.run.dir={run_dir}", f"paths.cache_dir={tmp_path / 'cache'}", *extra]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["diffusion", "gan", "vae"])
def test_kill_9_and_resume_equals_uninterrupted(family, tmp_path):
    (tmp_path / "killer_mod.py").write_text(KILLER)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    r = train(tmp_path, straight, family)
    assert r.returncode == 0, r.stderr[-3000:]
    r = train(tmp_path, killed, family, "+callbacks.killer._target_=killer_mod.KillAt", f"+callbacks.killer.step={K}")
    assert r.returncode == -9, (r.returncode, r.stderr[-3000:])
    assert torch.load(killed / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == K
    wandb_id = (killed / "wandb_id").read_text()
    r = train(tmp_path, killed, family)  # the same command again: ckpt_path=auto finds last.ckpt
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert "ckpt_path=auto: resuming from" in out and "skipping the 3 batch(es) of epoch 0" in out, out[-3000:]
    a, b = weights(straight), weights(killed)
    assert a.keys() == b.keys() and any(k.startswith("ema.") for k in a)
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differing, differing[:5]
    assert (killed / "wandb_id").read_text() == wandb_id
    runs = sorted(p.name.rsplit("-", 1)[-1] for p in (killed / "wandb").glob("offline-run-*"))
    assert runs == [wandb_id.strip()] * 2  # the relaunch continued the same W&B run


@pytest.mark.slow
@pytest.mark.parametrize("family", ["diffusion", "gan"])
def test_preempted_mid_batch_and_resumed_equals_uninterrupted(family, tmp_path):
    (tmp_path / "killer_mod.py").write_text(KILLER)
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    assert train(tmp_path, straight, family).returncode == 0
    r = train(tmp_path, cut, family, "+callbacks.killer._target_=killer_mod.ExitMidBatch", f"+callbacks.killer.step={K}",
              "callbacks.model_checkpoint.every_n_train_steps=100")  # only the interrupt checkpoint exists
    assert r.returncode not in (0, -9) and "interrupted at global step 3" in r.stdout + r.stderr, r.stderr[-3000:]
    r = train(tmp_path, cut, family)  # checkpointing every step now: a changed callback config
    assert r.returncode == 0 and "skipping the 3 batch(es) of epoch 0" in r.stdout + r.stderr, r.stderr[-3000:]
    assert not list((cut / "checkpoints").glob("last-v*.ckpt"))  # last.ckpt itself is overwritten
    a, b = weights(straight), weights(cut)
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differing, differing[:5]
