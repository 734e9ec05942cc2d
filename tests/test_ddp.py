"""DDP (issue 12): every family trains under 2-process DDP on CPU (gloo) through the one entry point.

Lightning's launcher re-runs ``python -m t2ilab.train ...`` for rank 1 with the same ``hydra.run.dir``;
only rank 0 writes the run dir's files. A probe callback (written to tmp_path, added with
``+callbacks.probe._target_=...``) records per rank: the weights before DDP wraps the module (equal:
same seed), the items of every batch (disjoint shards of the seeded epoch order, data/order.py), a
random draw after every batch (different: per-rank seeding), the synced ``val/loss`` (equal) and the
final weights (equal: gradients were all-reduced).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from t2ilab.data.order import ResumableRandomSampler
from test_exact_resume import KILLER, TINY

PROBE = """
import hashlib, json, os
import lightning as L
import torch

def digest(module):
    h = hashlib.sha1()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode()); h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()

class Probe(L.Callback):
    def __init__(self, out):
        self.out, self.rec = out, {"indices": [], "draws": []}
    def setup(self, trainer, module, stage):  # before the strategy wraps (and broadcasts) the module
        self.rec["init"] = digest(module)
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.rec["indices"].append(batch["index"].tolist())
    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.rec["draws"].append(torch.rand(2).tolist())
    def on_train_end(self, trainer, module):
        val = trainer.callback_metrics.get("val/loss")
        self.rec.update(rank=trainer.global_rank, world_size=trainer.world_size, final=digest(module),
                        val=None if val is None else float(val))
        with open(os.path.join(self.out, f"probe_rank{trainer.global_rank}.json"), "w") as f:
            json.dump(self.rec, f)

class FailOnRank(L.Callback):
    '''An error on one rank only, before the batch after global step `step`.'''
    def __init__(self, rank, step):
        self.rank, self.step = rank, step
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            raise ValueError(f"boom on rank {self.rank}")
"""
NUM_TRAIN, BATCH, STEPS, SEED = 64, 8, 4, 42  # 32 items = 4 batches per rank and epoch: STEPS = one epoch


def train(tmp_path: Path, run_dir: Path, family: str, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for var in ("LOCAL_RANK", "NODE_RANK", "RANK", "WORLD_SIZE", "SLURM_JOB_ID", "SLURM_PROCID", "T2ILAB_RUN_NAME"):
        env.pop(var, None)
    args = [sys.executable, "-m", "t2ilab.train", f"model={family}", "debug=fast", *TINY[family],
            "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
            f"data.num_train={NUM_TRAIN}", "data.num_val=16", f"data.batch_size={BATCH}", f"seed={SEED}",
            f"trainer.max_steps={STEPS}", "model.cond_drop_prob=0.2",
            "+callbacks.probe._target_=ddp_probe.Probe", f"+callbacks.probe.out={tmp_path}",
            f"hydra.run.dir={run_dir}", f"paths.output_dir={tmp_path / 'outputs'}",
            f"paths.cache_dir={tmp_path / 'cache'}", *extra]
    return subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)


def probes(tmp_path: Path) -> list[dict]:
    return [json.loads((tmp_path / f"probe_rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["diffusion", "gan", "vae"])
def test_two_process_ddp_on_cpu(family, tmp_path):
    (tmp_path / "ddp_probe.py").write_text(PROBE)
    run_dir = tmp_path / "run"
    r = train(tmp_path, run_dir, family)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]

    # one run, one set of files, written by rank 0 only
    assert (run_dir / "COMPLETE").is_file() and not (run_dir / "FAILED").exists()
    assert not (tmp_path / "outputs").exists()  # no stray run dir under paths.output_dir
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "ddp_probe.py", "probe_rank0.json",
                                                          "probe_rank1.json", "run"]
    assert len(list(tmp_path.rglob("manifest.json"))) == 1 and len(list(tmp_path.rglob("config_tree.txt"))) == 1
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert not any("train_ddp_process" in a for a in manifest["command"])  # rank 0's command, not rank 1's
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    assert (run_dir / "wandb_id").read_text().strip() in next((run_dir / "wandb").glob("offline-run-*")).name
    assert [p.name for p in (run_dir / "samples").iterdir()] == [f"grid_step{STEPS:07d}.png"]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == STEPS and ckpt["t2ilab"]["batches_seen"] == STEPS  # GAN: D steps uncounted
    log = (run_dir / "train.log").read_text()
    assert "[rank 1]" not in log or all("INFO" not in line for line in log.splitlines() if "[rank 1]" in line)

    p0, p1 = probes(tmp_path)
    assert (p0["rank"], p1["rank"], p0["world_size"]) == (0, 1, 2)
    assert p0["init"] == p1["init"]  # same seed -> same initial weights (before DDP's broadcast)
    assert p0["final"] == p1["final"]  # gradients all-reduced: the ranks never drift apart
    assert p0["val"] is not None and p0["val"] == p1["val"]  # val/loss synced over ranks (sync_dist)
    assert all(a != b for a, b in zip(p0["draws"], p1["draws"]))  # per-rank noise / dropout draws
    # disjoint shards of the seeded epoch order that together cover the training set
    shards = [[i for batch in p["indices"] for i in batch] for p in (p0, p1)]
    assert all(len(s) == STEPS * BATCH for s in shards)
    assert not set(shards[0]) & set(shards[1]) and set(shards[0]) | set(shards[1]) == set(range(NUM_TRAIN))
    assert shards == [list(ResumableRandomSampler(NUM_TRAIN, SEED, num_replicas=2, rank=r)) for r in (0, 1)]


@pytest.mark.slow
def test_ddp_kill_9_and_resume_equals_uninterrupted(tmp_path):
    """Exact resume under DDP: the per-rank RNG is a function of (seed, rank, batch) and each rank skips
    the batches of its own shard already trained, so the resumed run ends bit-identical."""
    (tmp_path / "ddp_probe.py").write_text(PROBE)
    (tmp_path / "killer_mod.py").write_text(KILLER)
    straight, killed, n, k = tmp_path / "straight", tmp_path / "killed", 6, 3  # k mid-epoch 0, n in epoch 1
    common = [f"trainer.max_steps={n}", "callbacks.model_checkpoint.every_n_train_steps=1",
              "callbacks.sample_grid.every_n_steps=100", "trainer.val_check_interval=2"]
    assert train(tmp_path, straight, "diffusion", *common).returncode == 0
    r = train(tmp_path, killed, "diffusion", *common, "+callbacks.killer._target_=killer_mod.KillAt",
              f"+callbacks.killer.step={k}")
    assert r.returncode == -9, (r.returncode, (r.stdout + r.stderr)[-3000:])
    r = train(tmp_path, killed, "diffusion", *common)  # the same command: ckpt_path=auto resumes
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "skipping the 3 batch(es) of epoch 0" in out, out[-3000:]
    a, b = (torch.load(d / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"] for d in (straight, killed))
    assert a.keys() == b.keys() and not [key for key in a if not torch.equal(a[key], b[key])]
    assert (killed / "COMPLETE").is_file() and len(list((killed / "wandb").glob("offline-run-*"))) == 2
    assert len({p.name.rsplit("-", 1)[-1] for p in (killed / "wandb").glob("offline-run-*")}) == 1  # same W&B run


@pytest.mark.slow
@pytest.mark.parametrize("rank", [0, 1])
def test_ddp_failure_of_one_rank_is_recorded_with_its_cause(rank, tmp_path):
    """One rank fails alone: the FAILED marker names that rank's error first (the other one only sees a
    closed connection), the run is never marked COMPLETE and the command exits non-zero."""
    (tmp_path / "ddp_probe.py").write_text(PROBE)
    run_dir = tmp_path / "run"
    r = train(tmp_path, run_dir, "vae", "+callbacks.fail._target_=ddp_probe.FailOnRank", f"+callbacks.fail.rank={rank}",
              "+callbacks.fail.step=2")
    assert r.returncode != 0 and not (run_dir / "COMPLETE").exists()
    reason = json.loads((run_dir / "FAILED").read_text())["reason"]
    assert reason.startswith(f"DDP rank {rank}: ValueError: boom on rank {rank} at global step 2"), reason
