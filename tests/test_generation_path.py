"""One generation path, one writer (models/generation.py, evaluation/images.SampleWriter): the
files of a sample request depend only on (model, prompts, seed, index, sampling options) — byte
for byte the same across batch sizes, across 1 vs 2 (simulated) ranks and between the sample
writer and the training grid callback; the sample folder holds only sample PNGs + prompts.jsonl
and the grid lies beside it. Tiny real models of every family (per-image and per-step noise)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from t2ilab.evaluation.images import grid_path_beside, image_seed
from t2ilab.models.generation import generate_images, iter_generate, shard_indices
from t2ilab.models.generation import write_samples
from t2ilab.utils.config import CONF_DIR

COND_DIM = 16
PROMPTS = ["a red circle", "a blue square", "a green triangle"]
TINY = {  # a few thousand parameters per family
    "diffusion": {"net": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [],
                          "heads": 2, "dropout": 0.0}, "sampling": {"num_steps": 3, "eta": 1.0}},  # eta: per-step noise
    "gan": {"z_dim": 8, "generator": {"base_channels": 8, "max_channels": 16, "emb_dim": 16},
            "discriminator": {"base_channels": 8, "max_channels": 16}},
    "vae": {"z_dim": 8, "net": {"base_channels": 8, "max_channels": 16, "emb_dim": 16}},
}


def tiny_model(family: str, channels: int = 3):
    from t2ilab.utils.builders import build_model

    cfg = OmegaConf.merge(OmegaConf.load(CONF_DIR / "model" / f"{family}.yaml"), TINY[family],
                          {"image_size": 16, "channels": channels})
    torch.manual_seed(0)
    return build_model(cfg, COND_DIM).eval()


def cond(n: int = len(PROMPTS)) -> torch.Tensor:
    return torch.randn(n, COND_DIM, generator=torch.Generator().manual_seed(1))


def files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


@pytest.mark.parametrize("family", ["diffusion", "gan", "vae"])
def test_files_are_byte_identical_across_batch_sizes(family, tmp_path):
    model = tiny_model(family)
    runs = {b: files(write_samples(model, cond(), PROMPTS, tmp_path / f"b{b}", num_per_prompt=3, seed=11,
                                   batch_size=b, grid=False)) for b in (1, 3, 8)}
    assert sorted(runs[1]) == [f"{i:06d}.png" for i in range(9)] + ["prompts.jsonl"]
    assert runs[1] == runs[3] == runs[8]
    pngs = [v for k, v in runs[1].items() if k.endswith(".png")]
    assert len(set(pngs)) == len(pngs)  # every image has its own noise (incl. the same prompt's images)


@pytest.mark.parametrize("family", ["diffusion", "gan"])
def test_two_simulated_ranks_write_the_single_rank_files(family, tmp_path):
    model = tiny_model(family)
    one = files(write_samples(model, cond(), PROMPTS, tmp_path / "one", num_per_prompt=3, seed=4, batch_size=4,
                              grid=False))
    for rank in (1, 0):  # any order; each "rank" writes its shard rank::2 (+ rank 0 the index)
        write_samples(model, cond(), PROMPTS, tmp_path / "two", num_per_prompt=3, seed=4, batch_size=2,
                      rank=rank, world_size=2)
    assert files(tmp_path / "two") == one
    assert not grid_path_beside(tmp_path / "two").exists()  # no rank has all images: grid left to the caller


def test_shard_indices_partition_the_images():
    for n, w in [(9, 1), (9, 2), (10, 3), (2, 4)]:
        shards = [shard_indices(n, r, w) for r in range(w)]
        assert sorted(i for s in shards for i in s) == list(range(n))
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
    with pytest.raises(ValueError, match="rank"):
        shard_indices(4, 2, 2)


def test_an_image_depends_only_on_its_index_and_seed():
    """generate_images(indices=...) of any subset/order gives the same images as the full request."""
    model = tiny_model("diffusion")
    full, seeds = generate_images(model, cond(), num_per_prompt=2, seed=7, batch_size=6)
    assert seeds == [image_seed(7, i) for i in range(6)] == list(range(7, 13))
    part, part_seeds = generate_images(model, cond(), num_per_prompt=2, seed=7, batch_size=2, indices=[5, 0, 3])
    assert torch.equal(part, full[[5, 0, 3]]) and part_seeds == [12, 7, 10]
    other, _ = generate_images(model, cond(), num_per_prompt=2, seed=8, batch_size=6)
    assert not torch.equal(other, full)
    with pytest.raises(ValueError, match="one .* row per index"):
        next(iter_generate(model, cond(), [0, 1], seed=0))


def test_sample_folder_holds_only_samples_and_the_grid_lies_beside_it(tmp_path):
    model = tiny_model("vae", channels=1)
    out = write_samples(model, cond(), PROMPTS, tmp_path / "final", num_per_prompt=2, seed=0, temperature=0.5)
    assert sorted(p.name for p in out.iterdir()) == [f"{i:06d}.png" for i in range(6)] + ["prompts.jsonl"]
    assert Image.open(out / "000000.png").mode == "L"  # 1-channel model -> gray PNG
    grid = tmp_path / "final_grid.png"
    assert grid.is_file() and grid_path_beside(out) == grid
    rows = [json.loads(line) for line in (out / "prompts.jsonl").read_text().splitlines()]
    assert rows[3] == {"file": "000003.png", "index": 3, "prompt": "a blue square", "seed": 3,
                       "sampling": {**model.sampling_defaults, "temperature": 0.5}}
    # a later, smaller request into the same folder leaves no stale sample behind
    write_samples(model, cond(1), PROMPTS[:1], out, num_per_prompt=2, seed=0)
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "000001.png", "prompts.jsonl"]


def test_training_grid_shows_the_sample_files(tmp_path):
    """The grid callback's image i is the sample writer's file i (same generation function)."""
    from t2ilab.evaluation.images import load_image_folder
    from t2ilab.tracking.grid import write_grid
    from t2ilab.tracking.sample_grid import SampleGridCallback

    model = tiny_model("diffusion")
    table = dict(zip(PROMPTS, cond()))
    trainer = SimpleNamespace(global_step=5, default_root_dir=str(tmp_path / "run"), loggers=[],
                              datamodule=SimpleNamespace(encode=lambda ps: torch.stack([table[p] for p in ps])))
    cb = SampleGridCallback(prompts=PROMPTS, num_per_prompt=2, seed=3, sampling={"num_steps": 2})
    drawn = cb.draw(trainer, model)
    out = write_samples(model, cond(), PROMPTS, tmp_path / "samples", num_per_prompt=2, seed=3, batch_size=1,
                        grid=False, num_steps=2)
    again = write_grid(load_image_folder(out), PROMPTS, 2, tmp_path / "from_files.png")
    assert np.array_equal(np.asarray(Image.open(drawn)), np.asarray(again))


def test_list_valued_sampling_defaults_from_yaml_reach_prompts_jsonl(tmp_path):
    """A preset's ``sampling.guidance_interval: [0.3, 5.0]`` arrives from Hydra as a ListConfig; the final
    samples of a training run wrote it to prompts.jsonl and crashed (JSON cannot hold a ListConfig)."""
    from t2ilab.utils.builders import build_model

    cfg = OmegaConf.merge(OmegaConf.load(CONF_DIR / "model" / "diffusion.yaml"), TINY["diffusion"],
                          {"image_size": 16, "channels": 3, "sampling": {"guidance_interval": [0.3, 5.0]}})
    model = build_model(cfg, COND_DIM).eval()
    out = write_samples(model, cond(1), PROMPTS[:1], tmp_path / "s", num_per_prompt=2, seed=0, grid=False,
                        desc="final samples")
    rows = [json.loads(line) for line in (out / "prompts.jsonl").read_text().splitlines()]
    assert [r["sampling"]["guidance_interval"] for r in rows] == [[0.3, 5.0], [0.3, 5.0]]
    assert "desc" not in rows[0]["sampling"]  # the progress label is not a sampling option
