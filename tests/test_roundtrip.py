"""Image -> caption -> image round trip (``python -m t2ilab.roundtrip``; evaluation/roundtrip.py,
evaluation/caption_bank.py): retrieval returns the exact caption when the query is that caption's
embedding, captions are labelled like the dataset labels its items, banks are built / rejected
with errors naming ``captions``, and the entry point runs end to end on a tiny checkpoint for
every kind of input (in process; the subprocess run on a trained checkpoint is ``slow``)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from t2ilab.evaluation.caption_bank import CaptionBank, build_bank, caption_labeler, retrieve
from t2ilab.utils.config import CONF_DIR

TINY_CLIP = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "encoder" / "clip_tiny.yaml"))["model_cfg"]
NET = ["model.net.base_channels=8", "model.net.channel_mult=[1,2]", "model.net.num_res_blocks=1",
       "model.net.attn_resolutions=[]", "model.sampling.num_steps=2"]
DATA = ["data.image_size=16", "data.num_train=64", "data.num_val=32", "data.num_test=8"]


@pytest.fixture(scope="module")
def shapes_dm():
    from t2ilab.data.shapes import ShapesDataModule

    return ShapesDataModule(num_train=32, num_val=200, num_test=8, image_size=16)


@pytest.fixture(scope="module")
def tiny_clip():
    from t2ilab.encoders.open_clip_encoder import OpenCLIPEncoder

    return OpenCLIPEncoder(model_name="clip-tiny", random_init=True, model_cfg=TINY_CLIP, device="cpu")


def test_retrieval_returns_the_exact_caption(shapes_dm, tiny_clip):
    bank = build_bank("auto", shapes_dm)
    text = bank.features(tiny_clip)
    queries = [5, 0, 47, 9]
    idx, score = retrieve(text[queries], text, chunk=3)  # a query embedding equal to one bank entry
    assert idx.tolist() == queries and torch.allclose(score, torch.ones(4), atol=1e-5)
    assert [bank.captions[i] for i in idx] == ["an orange circle", "a red circle", "a pink cross", "a green square"]
    tie = torch.nn.functional.normalize(torch.ones(3, 4), dim=1)
    assert retrieve(tie[:1], tie)[0].tolist() == [0]  # ties go to the first caption
    with pytest.raises(ValueError, match="captions"):
        retrieve(text[:1], text[:0])


def test_captions_are_labelled_like_the_dataset(shapes_dm):
    from t2ilab.data.class_prompts import FashionMNISTDataModule
    from t2ilab.evaluation.plan import label_stated

    label, ds = caption_labeler(shapes_dm), shapes_dm.dataset("val")
    stated = [i for i in range(len(ds)) if label_stated(ds.attributes(i))]
    assert len(stated) > 50 and all(label(ds.caption(i)) == ds.label(i) for i in stated)
    assert label("a large star on the left") is None
    fm = caption_labeler(FashionMNISTDataModule(source_dir=None))
    assert [fm(c) for c in ("a photo of a t-shirt", "a photo of a shirt", "an ankle boot", "a Sneaker", "a hat")] == \
        [0, 6, 9, 7, None]


def test_banks(shapes_dm, tmp_path):
    from t2ilab.data.class_prompts import FashionMNISTDataModule

    auto = build_bank("auto", shapes_dm)
    assert len(auto) == 48 and sorted(auto.labels) == list(range(48))
    full = build_bank("auto_full", shapes_dm)
    assert len(full) == 48 * 2 * 4 and full.captions[0] == "a small red circle on a white background"
    fm = build_bank("auto", FashionMNISTDataModule(source_dir=None))
    assert len(fm) == 60 and "an image of an ankle boot" in fm.captions and fm.labels.count(9) == 6
    f = tmp_path / "bank.txt"
    f.write_text("a red circle\n\n  a blue star  \na red circle\nsomething else\n")
    b = build_bank(str(f), shapes_dm)
    assert b.captions == ["a red circle", "a blue star", "something else"] and b.labels == [0, 34, None]
    assert build_bank(["a green square"], shapes_dm).labels == [9]
    f.write_text("\n \n")
    for spec in (str(f), []):
        with pytest.raises(ValueError, match="captions: the caption bank .* is empty"):
            build_bank(spec, shapes_dm)
    with pytest.raises(FileNotFoundError, match="captions="):
        build_bank(str(tmp_path / "missing.txt"), shapes_dm)
    assert isinstance(auto, CaptionBank)


def tiny_checkpoint(path, cache, family: str = "diffusion"):
    """A t2ilab checkpoint of an untrained tiny model, written like training writes one."""
    from t2ilab.utils.builders import build_encoder, build_model

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={family}", f"paths.cache_dir={cache}", *DATA,
                                          *(NET if family == "diffusion" else [])])
    run_cfg = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "data", "encoder", "prompt_expansion")}
    run_cfg["seed"] = int(cfg.seed)
    enc = build_encoder(OmegaConf.create(run_cfg["encoder"]), OmegaConf.create(run_cfg))
    torch.manual_seed(0)
    model = build_model(OmegaConf.create(run_cfg["model"]), enc.dim)
    torch.save({"state_dict": model.state_dict(), "t2ilab": {"config": run_cfg, "family": model.family,
                                                             "cond_dim": enc.dim, "token_dim": 0}}, path)
    return path


def roundtrip_cfg(ckpt, out, cache, *overrides):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("roundtrip", overrides=[f"ckpt_path={ckpt}", f"out_dir={out}", f"paths.run_dir={out}",
                                              f"paths.cache_dir={cache}", "logger=none", "device=cpu",
                                              "metrics.clip.model_name=clip-tiny", "metrics.clip.pretrained=null",
                                              "metrics.clip.random_init=true", "metrics.classifier.max_train=64",
                                              "num_inputs=12", "batch_size=8", "grid_rows=4", *overrides])
    cfg.metrics.clip.model_cfg = TINY_CLIP
    return cfg


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("rt")
    return tiny_checkpoint(root / "tiny.ckpt", root / "cache"), root / "cache"


@pytest.mark.parametrize("inputs", ["split:val", "samples", "folder"])
def test_entry_point_end_to_end(ckpt, tmp_path, inputs):
    from PIL import Image

    from t2ilab.cli.roundtrip import roundtrip

    path, cache = ckpt
    spec = inputs
    if inputs == "folder":  # a t2ilab.sample export: labels come from its prompts.jsonl
        from t2ilab.models.checkpoint import load_model
        from t2ilab.models.generation import write_samples
        from t2ilab.utils.builders import build_encoder

        model, train_cfg = load_model(path)
        cond = build_encoder(train_cfg.encoder, train_cfg).encode_text(["a red circle", "a blue star"])
        spec = str(write_samples(model, cond, ["a red circle", "a blue star"], tmp_path / "in", num_per_prompt=3,
                                 grid=False))
    metrics = roundtrip(roundtrip_cfg(path, tmp_path / "out", cache, f"inputs={spec}"))
    n = 6 if inputs == "folder" else 12
    out = tmp_path / "out"
    rows = [json.loads(line) for line in (out / "roundtrip.jsonl").read_text().splitlines()]
    assert len(rows) == n and metrics["num_inputs"] == n and metrics["bank_size"] == 48
    assert {"caption", "score", "regenerated", "image_clip_similarity", "input_pred", "regen_pred", "agree"} <= set(rows[0])
    for key in ("retrieval_score", "image_clip_similarity", "image_clip_similarity_baseline", "classifier_agreement",
                "retrieval_accuracy"):
        assert math.isfinite(metrics[key]), (key, metrics)
    assert json.loads((out / "metrics.json").read_text())["meta"]["clip_random_init"] is True
    assert len(list((out / "regenerated").glob("*.png"))) == n == len(list((out / "inputs").glob("*.png")))
    assert Image.open(out / "regenerated" / "000000.png").size == (16, 16)
    assert Image.open(out / "roundtrip_grid.png").height > 4 * 32
    if inputs == "folder":
        assert [r["label"] for r in rows] == [0, 0, 0, 34, 34, 34]
        assert rows[0]["input_prompt"] == "a red circle"
    if inputs == "samples":
        assert rows[0]["input"] == "sample#0" and rows[0]["seed"] == 1000000


def test_bad_inputs_and_banks_fail_early(ckpt, tmp_path):
    from t2ilab.cli.roundtrip import roundtrip

    path, cache = ckpt
    with pytest.raises(FileNotFoundError, match="inputs="):
        roundtrip(roundtrip_cfg(path, tmp_path / "a", cache, f"inputs={tmp_path / 'nope'}"))
    with pytest.raises(ValueError, match="captions"):
        roundtrip(roundtrip_cfg(path, tmp_path / "b", cache, "captions=[]"))
    with pytest.raises(ValueError, match="split must be"):
        roundtrip(roundtrip_cfg(path, tmp_path / "c", cache, "inputs=split:dev"))


@pytest.mark.slow
def test_trained_checkpoint_subprocess_with_wandb_offline(tmp_path):
    """``python -m t2ilab.train debug=fast`` -> ``python -m t2ilab.roundtrip`` (W&B offline table)."""
    from t2ilab.compat.wandb import read_offline_run

    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "1"}
    cache, train_dir, out = tmp_path / "cache", tmp_path / "train", tmp_path / "rt"

    def run(module, *args):
        r = subprocess.run([sys.executable, "-m", f"t2ilab.{module}", *args], capture_output=True, text=True,
                           timeout=600, env=env)
        assert r.returncode == 0, r.stderr[-4000:]

    run("train", "debug=fast", "logger=none", "callbacks.sample_grid=null", f"hydra.run.dir={train_dir}",
        f"paths.cache_dir={cache}", *DATA, *NET)
    run("roundtrip", f"ckpt_path={train_dir / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={out}",
        f"paths.cache_dir={cache}", "inputs=split:val", "num_inputs=8", "metrics.clip.random_init=true",
        "metrics.clip.model_name=clip-tiny", "metrics.clip.pretrained=null", "metrics.classifier.max_train=64",
        "metrics.clip.model_cfg=" + json.dumps(TINY_CLIP).replace('"', ""), "table_size=4")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_inputs"] == 8 and math.isfinite(metrics["classifier_agreement"])
    logged = read_offline_run(next((out / "wandb").glob("offline-run-*")))
    assert logged["summary"]["roundtrip/table/_type"] == "table-file"
    assert logged["summary"]["roundtrip/table/nrows"] == 4
    assert math.isclose(logged["summary"]["roundtrip/image_clip_similarity"], metrics["image_clip_similarity"])
    assert (out / "COMPLETE").is_file()
