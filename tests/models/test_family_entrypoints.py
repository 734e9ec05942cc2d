"""End to end through the real entry points, per family: ``python -m t2ilab.train model=<family>
debug=fast`` then ``python -m t2ilab.sample`` on its last.ckpt (subprocesses, offline W&B)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

# debug=fast plus a small dataset and tiny nets: the run is dominated by process start-up.
SMALL = ["data.num_train=64", "data.num_val=16", "data.batch_size=4"]
TINY_NETS = {
    "gan": ["model.generator.base_channels=8", "model.generator.max_channels=16",
            "model.discriminator.base_channels=8", "model.discriminator.max_channels=16"],
    "vae": ["model.net.base_channels=8", "model.net.max_channels=16"],
}


def _run(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.mark.slow  # ~22 s each on 2 cores; the diffusion path runs by default in tests/test_entrypoints.py
@pytest.mark.parametrize("family", ["gan", "vae"])
def test_train_then_sample(family, tmp_path):
    run_dir, out_dir = tmp_path / "run", tmp_path / "samples"
    _run(["t2ilab.train", f"model={family}", "debug=fast", "logger=csv", f"hydra.run.dir={run_dir}",
          f"paths.cache_dir={tmp_path / 'cache'}", *SMALL, *TINY_NETS[family]], tmp_path)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    assert list((run_dir / "samples").glob("grid_step*.png"))
    _run(["t2ilab.sample", f"ckpt_path={ckpt}", 'prompts=["a red circle"]', f"out_dir={out_dir}",
          "num_per_prompt=2", f"paths.cache_dir={tmp_path / 'cache'}"], tmp_path)
    rows = [json.loads(line) for line in (out_dir / "prompts.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["a red circle"] * 2
    for r in rows:
        with Image.open(out_dir / r["file"]) as im:
            assert im.size == (32, 32) and im.mode == "RGB"
    assert sorted(p.name for p in out_dir.iterdir()) == [r["file"] for r in rows] + ["prompts.jsonl"]
    assert (tmp_path / "samples_grid.png").is_file()  # beside the sample folder, not in it
