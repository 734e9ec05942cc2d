"""The evaluation engine generates and writes through the same path as ``t2ilab.sample``: its
exported folder is byte-identical to ``write_samples`` of the plan's prompts with the same seed
(whatever either batch size), to a 2-rank sharded export, and its prompts.jsonl has the sample
schema (+ label). The evaluated pixels are the written ones."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from t2ilab.evaluation.engine import Evaluator
from t2ilab.evaluation.images import load_image_folder
from t2ilab.models.generation import write_samples
from t2ilab.utils.config import CONF_DIR

NET = {"net": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "heads": 2,
               "dropout": 0.0}, "sampling": {"num_steps": 2}, "image_size": 32, "channels": 3}


@pytest.fixture(scope="module")
def diffusion(shapes_dm):
    """A tiny untrained diffusion model conditioned like the shapes data (32 px RGB, tiny CLIP)."""
    from t2ilab.utils.builders import build_model

    torch.manual_seed(0)
    cfg = OmegaConf.merge(OmegaConf.load(CONF_DIR / "model" / "diffusion.yaml"), NET)
    return build_model(cfg, shapes_dm.text_encoder.dim).eval()


def rows(d) -> list[dict]:
    return [json.loads(line) for line in (d / "prompts.jsonl").read_text().splitlines()]


def folder(d) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_eval_export_equals_sample_writer_and_sharded_export(diffusion, shapes_dm, metrics_cfg, standin, tmp_path):
    cfg = metrics_cfg(num_samples=7, batch_size=3, seed=5, prompt_accuracy=False, classifier_fd=False,
                      clip_score=False, sampling={"eta": 1.0}, table_size=7)
    ev = Evaluator(cfg, shapes_dm, str(tmp_path / "cache"), feature_extractor=standin(0))
    ev.evaluate(diffusion, sample_dir=str(tmp_path / "eval"))
    exported = folder(tmp_path / "eval")
    assert sorted(exported) == [f"{i:06d}.png" for i in range(7)] + ["prompts.jsonl"]
    assert torch.equal(load_image_folder(tmp_path / "eval"), ev.thumbnails["image"])  # evaluated == written

    # the sample writer, same prompts / seed / options, another batch size: the same files
    prompts = ev.plan.prompts
    write_samples(diffusion, shapes_dm.encode(prompts), prompts, tmp_path / "sample", num_per_prompt=1, seed=5,
                  batch_size=4, grid=False, eta=1.0)
    sampled = folder(tmp_path / "sample")
    assert {k: v for k, v in sampled.items() if k.endswith(".png")} == \
        {k: v for k, v in exported.items() if k.endswith(".png")}
    ev_rows, sample_rows = rows(tmp_path / "eval"), rows(tmp_path / "sample")
    assert [{k: v for k, v in r.items() if k != "label"} for r in ev_rows] == sample_rows  # one schema
    assert [r["seed"] for r in ev_rows] == list(range(5, 12)) and all("label" in r for r in ev_rows)

    # two ranks (the DDP callback's sharding), each writing its own PNGs: the same folder again
    ev2 = Evaluator({**cfg, "batch_size": 2}, shapes_dm, str(tmp_path / "cache"), feature_extractor=standin(0))
    ev2.prepare("cpu")
    from t2ilab.evaluation.images import SampleWriter

    writer = SampleWriter(tmp_path / "ranks")
    shards = [ev2.generate_shard(diffusion, rank=r, world_size=2, writer=writer) for r in range(2)]
    writer.write_index(ev2.plan.prompts, ev2.plan.seed, ev2.sampling_used, ev2.plan.label_list)
    assert folder(tmp_path / "ranks") == exported
    assert sorted(torch.cat([s["index"] for s in shards]).tolist()) == [-1] + list(range(7))  # padded for gather
