"""Text-guided editing (``python -m t2ilab.edit``, src/t2ilab/editing/): the family edits (VAE
reconstructs with the source caption, GAN inversion fits), option checks, input reading, out_dir
safety, the metrics, and the entry point end to end (in-process on an untrained tiny VAE checkpoint;
``slow``: a ``python -m t2ilab.train model=vae debug=fast`` run edited through the CLI with W&B offline)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from t2ilab.utils.config import CONF_DIR

COND_DIM = 16
TINY = {"gan": {"z_dim": 8, "generator": {"base_channels": 8, "max_channels": 16, "emb_dim": 16},
                "discriminator": {"base_channels": 8, "max_channels": 16}},
        "vae": {"z_dim": 8, "net": {"base_channels": 8, "max_channels": 16, "emb_dim": 16}},
        "diffusion": {"net": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [],
                              "heads": 2, "dropout": 0.0}, "sampling": {"num_steps": 2}}}
TINY_CLIP = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "encoder" / "clip_tiny.yaml").model_cfg)


def tiny(family: str, seed: int = 0, **overrides):
    from t2ilab.utils.builders import build_model

    cfg = OmegaConf.merge(OmegaConf.load(CONF_DIR / "model" / f"{family}.yaml"),
                          {"image_size": 16, "channels": 3}, TINY[family], overrides)
    torch.manual_seed(seed)
    model = build_model(cfg, COND_DIM).eval()
    with torch.no_grad():  # untrained nets zero-init their caption modulation: make captions matter
        for prm in model.parameters():
            prm.add_(0.05 * torch.randn_like(prm))
    return model


def conds(n: int, seed: int) -> torch.Tensor:
    c = torch.randn(n, COND_DIM, generator=torch.Generator().manual_seed(seed))
    return c / c.norm(dim=1, keepdim=True)


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_vae_edit_with_the_source_caption_is_the_reconstruction():
    model, x, c = tiny("vae"), images(3), conds(3, 1)
    same = model.edit(x, c, strength=0.6, source_cond=c)
    recon = model.reconstruct(x * 2 - 1, c)
    assert torch.allclose(same, recon, atol=1e-5)
    assert torch.isclose((same - x).pow(2).mean(), (recon - x).pow(2).mean(), rtol=1e-5)
    other = model.edit(x, conds(3, 2), strength=1.0, source_cond=c)
    assert other.shape == x.shape and 0 <= other.min() and other.max() <= 1
    assert (other - same).abs().max() > 1e-4  # the caption changes the image
    # per image: batching does not change an edit; strength moves it gradually
    alone = model.edit(x[1:2], conds(3, 2)[1:2], strength=1.0, source_cond=c[1:2])
    assert torch.allclose(alone, other[1:2], atol=1e-5)
    half = model.edit(x, conds(3, 2), strength=0.5, source_cond=c)
    assert (half - same).abs().mean() < (other - same).abs().mean()
    assert model.edit(x, c, strength=1.0).shape == x.shape  # no source caption: the null condition


@pytest.mark.parametrize("family", ["vae", "gan"])
@pytest.mark.parametrize("strength", [0, -0.1, 1.5, math.nan, "abc", True])
def test_strength_outside_the_unit_interval_is_refused(family, strength):
    model = tiny(family)
    with pytest.raises(ValueError, match=r"strength=.* must be a number in \(0, 1\]"):
        model.edit(images(1), conds(1, 1), strength=strength)


def test_the_spatial_autoencoder_and_families_without_edit_refuse_clearly():
    from t2ilab.editing.families import edit_batch, require_edit
    from t2ilab.models.diffusion import DiffusionModule

    ae = tiny("vae", prior="standard", net={"latent": "spatial", "latent_channels": 4, "downsample": 4})
    with pytest.raises(ValueError, match="ignores captions"):
        ae.edit(images(1), conds(1, 1), strength=0.5)
    with pytest.raises(ValueError, match="ignores captions"):
        require_edit(ae)  # the entry point checks before any other work
    with pytest.raises(NotImplementedError, match=r"^toy has no edit\(\)"):
        require_edit(type("Toy", (), {"family": "toy"})())
    diffusion = tiny("diffusion")
    if not hasattr(DiffusionModule, "edit"):
        with pytest.raises(NotImplementedError, match=r"^diffusion has no edit\(\)"):
            edit_batch(diffusion, images(1), conds(1, 1), strength=0.5)
    else:  # implemented by models/diffusion.py: the common API
        out, info = edit_batch(diffusion, images(2), conds(2, 1), strength=0.5, inversion_steps=3,
                               generator=[torch.Generator().manual_seed(i) for i in range(2)], num_steps=2)
        assert out.shape == (2, 3, 16, 16) and 0 <= out.min() and out.max() <= 1 and info == {}


def test_gan_inversion_fits_the_image_better_than_a_random_z():
    from t2ilab.editing.families import gan_edit

    model, c = tiny("gan"), conds(2, 1)
    x = model.generate(c, generator=torch.Generator().manual_seed(7))  # images the generator can draw
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(2)]  # noqa: E731
    out, info = gan_edit(model, x, conds(2, 2), strength=1.0, source_cond=c, generator=gens(), inversion_steps=60,
                         inversion_lr=0.1)
    assert out.shape == x.shape
    assert (info["inversion_mse"] < 0.5 * info["inversion_mse_init"]).all(), info
    _, none = gan_edit(model, x, c, strength=1.0, source_cond=c, generator=gens(), inversion_steps=0)
    assert torch.equal(none["inversion_mse"], none["inversion_mse_init"])
    assert torch.allclose(none["inversion_mse_init"], info["inversion_mse_init"])  # seeded start per image
    assert model.edit(x, c, strength=0.3, inversion_steps=2).shape == x.shape
    with pytest.raises(TypeError, match=r"unknown options \['num_steps'\]"):
        model.edit(x, c, strength=0.3, num_steps=2)


def write_png(path: Path, arr: np.ndarray, mode: str) -> None:
    Image.fromarray(arr, mode).save(path)


def test_inputs_are_read_checked_and_converted(tmp_path, caplog):
    from t2ilab.editing.inputs import collect_inputs, load_inputs

    write_png(tmp_path / "a_gray.png", np.full((40, 24), 200, np.uint8), "L")
    write_png(tmp_path / "b_rgba.png", np.zeros((16, 16, 4), np.uint8), "RGBA")
    write_png(tmp_path / "c_ok.png", np.full((16, 16, 3), 9, np.uint8), "RGB")
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "captions.jsonl").write_text('{"file": "a_gray.png", "caption": " a coat ", "label": "coat"}\n'
                                             '{"file": "c_ok.png", "caption": "a bag", "label": 8}\n')
    items, skipped = collect_inputs(tmp_path)
    assert [i.path.name for i in items] == ["a_gray.png", "b_rgba.png", "c_ok.png"] and skipped == []
    assert [(i.caption, i.label) for i in items] == [("a coat", "coat"), (None, None), ("a bag", 8)]
    x = load_inputs(items, 16, 3)
    assert x.shape == (3, 3, 16, 16) and x.dtype == torch.uint8
    assert items[0].notes == ["centre-cropped 24x40 to 24x24", "resized 24px -> 16px (antialiased Lanczos)",
                              "converted L -> RGB"]
    assert items[1].notes == ["transparent pixels composited on white", "converted RGBA -> RGB"]
    assert int(x[1].min()) == 255 and items[2].notes == [] and int(x[2].max()) == 9
    assert [i.caption for i in collect_inputs(tmp_path, source_prompt="a shirt")[0]] == ["a shirt"] * 3
    (tmp_path / "d_broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ValueError, match=r"1 unreadable image file\(s\): .*d_broken.png.*skip_unreadable=true"):
        collect_inputs(tmp_path)
    items, skipped = collect_inputs(tmp_path, skip_unreadable=True)
    assert len(items) == 3 and len(skipped) == 1 and "d_broken.png" in skipped[0]
    (tmp_path / "captions.jsonl").write_text('{"file": "a_gray.png"}\n{"caption": "x"}\n')
    with pytest.raises(ValueError, match=r"captions.jsonl:2: expected an object with a \"file\""):
        collect_inputs(tmp_path)
    with pytest.raises(FileNotFoundError, match="inputs=.*does not exist"):
        collect_inputs(tmp_path / "missing")


def test_out_dir_with_files_is_refused_unless_overwrite(tmp_path):
    from t2ilab.editing.writer import prepare_out_dir

    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir(), out.mkdir()
    (out / "keep.txt").write_text("mine")
    (out / "old_edit.png").write_bytes(b"old")
    with pytest.raises(FileExistsError, match=r"out_dir=.*out already holds 2 file\(s\).*overwrite=true"):
        prepare_out_dir(out, False, inputs)
    assert (out / "old_edit.png").read_bytes() == b"old"
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "old_edit.png"]
    prepare_out_dir(out, True, inputs)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]  # only an earlier edit's files go
    with pytest.raises(ValueError, match="is the input folder"):
        prepare_out_dir(inputs, True, inputs)
    assert prepare_out_dir(tmp_path / "new" / "dir", False, inputs).is_dir()


def test_metric_helpers():
    from t2ilab.data.class_prompts import FashionMNISTDataModule
    from t2ilab.editing.metrics import clip_directional, faithfulness, find_label

    names = FashionMNISTDataModule.CLASS_NAMES
    assert find_label("a photo of a T-shirt", names) == 0 and find_label("a shirt", names) == 6
    assert find_label("a low resolution photo of an ankle boot", names) == 9
    assert find_label("a red car", names) is None
    shapes = ["red circle", "blue circle", "red square", "blue square"]
    assert find_label("a blue square and a red circle on a white background", shapes) == 3
    x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    same = faithfulness(x, x)
    assert torch.allclose(same["ssim"], torch.ones(2)) and torch.equal(same["psnr"], torch.full((2,), 100.0))
    worse = faithfulness(x, 255 - x)
    assert (worse["ssim"] < 0.5).all() and (worse["psnr"] < 20).all()
    e = torch.eye(4)  # directions of normalised embeddings:
    assert clip_directional(e[:1], e[1:2], 3 * e[:1], e[1:2]).item() == pytest.approx(1.0)  # normalised first
    assert clip_directional(e[:1], e[1:2], e[1:2], e[:1]).item() == pytest.approx(-1.0)
    assert clip_directional(e[:1], e[:1], e[2:3], e[3:4]).item() == 0.0  # an unchanged image: no direction


def tiny_vae_checkpoint(root: Path) -> Path:
    """An untrained tiny VAE checkpoint on a small shapes config (what load_model reads), no training."""
    from t2ilab.utils.builders import build_encoder, build_model

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["model=vae", f"paths.run_dir={root}", f"paths.cache_dir={root / 'cache'}",
                                          "data.image_size=16", "data.num_train=64", "data.num_val=16",
                                          "model.z_dim=8", "model.net.base_channels=8", "model.net.max_channels=16",
                                          "model.net.emb_dim=16", "data.colors=[red,blue]",
                                          "data.shapes=[circle,square]"])
    dim = build_encoder(cfg.encoder, cfg).dim
    torch.manual_seed(0)
    model = build_model(cfg.model, dim)
    meta = {"config": OmegaConf.to_container(cfg, resolve=True), "family": "vae", "cond_dim": dim, "token_dim": 0}
    torch.save({"state_dict": model.state_dict(), "global_step": 0, "t2ilab": meta}, root / "tiny.ckpt")
    return root / "tiny.ckpt"


def edit_cfg(*overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("edit", overrides=list(overrides))
    cfg.metrics.clip.model_name, cfg.metrics.clip.pretrained = "clip-tiny", None
    cfg.metrics.clip.random_init, cfg.metrics.clip.model_cfg = True, TINY_CLIP
    return cfg


def test_edit_entry_point_end_to_end_in_process(tmp_path):
    from t2ilab.cli.edit import edit

    ckpt = tiny_vae_checkpoint(tmp_path)
    (inputs := tmp_path / "in").mkdir()
    for i, color in enumerate([(220, 40, 40), (40, 80, 220), (240, 210, 30)]):
        write_png(inputs / f"img{i}.png", np.full((20, 20, 3), color, np.uint8), "RGB")
    (inputs / "captions.jsonl").write_text('{"file": "img0.png", "caption": "a red circle", "label": "red circle"}\n')
    common = [f"ckpt_path={ckpt}", f"inputs={inputs}", "prompt=a blue square", "strength=0.8", "seed=3",
              f"paths.run_dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}", "device=cpu",
              "logger=csv", "metrics.classifier.max_train=64", "metrics.classifier.epochs=1"]
    out = tmp_path / "edits"
    result = edit(edit_cfg(*common, f"out_dir={out}"))
    rows = [json.loads(line) for line in (out / "edits.jsonl").read_text().splitlines()]
    assert [r["file"] for r in rows] == ["img0_edit.png", "img1_edit.png", "img2_edit.png"]
    assert [(r["source_prompt"], r["seed"], r["strength"]) for r in rows] == [("a red circle", 3, 0.8), (None, 4, 0.8),
                                                                              (None, 5, 0.8)]
    assert rows[0]["notes"] == ["resized 20px -> 16px (antialiased Lanczos)"]
    assert rows[0]["source_label"] == "red circle" and rows[0]["metrics"]["source_label_index"] == 0
    assert set(rows[0]["metrics"]) >= {"ssim", "psnr", "clip_score", "clip_directional", "inversion_mse", "target_hit"}
    assert rows[0]["metrics"]["clip_directional"] is not None and rows[1]["metrics"]["clip_directional"] is None
    for r in rows:
        with Image.open(out / r["file"]) as a, Image.open(out / r["source"]) as b:
            assert a.size == b.size == (16, 16) and a.mode == b.mode == "RGB"
    assert Image.open(out / "edits_grid.png").height >= 3 * 32
    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved) >= {"clip_directional", "clip_score", "ssim", "psnr", "prompt_accuracy", "prompt_accuracy_before",
                          "source_accuracy", "inversion_mse", "num_images", "skipped", "meta"}
    assert saved["meta"]["target_class"] == "blue square" and saved["num_images"] == 3 and saved == json.loads(
        json.dumps(result, default=str))
    assert (tmp_path / "run" / "csv").is_dir()
    # batch size and grouping never change a file; an existing out_dir needs overwrite=true
    with pytest.raises(FileExistsError, match="overwrite=true"):
        edit(edit_cfg(*common, f"out_dir={out}", "batch_size=1"))
    again = tmp_path / "again"
    edit(edit_cfg(*common, f"out_dir={again}", "batch_size=1", "metrics.prompt_accuracy=false"))
    for r in rows:
        assert (again / r["file"]).read_bytes() == (out / r["file"]).read_bytes()


@pytest.mark.parametrize("bad, match", [("strength=0", r"strength=0 must be"), ("prompt=' '", r"prompt=' ' is empty"),
                                        ("source_prompt=''", "source_prompt='' is empty"),
                                        ("inversion_steps=-1", "inversion_steps=-1")])
def test_bad_options_fail_before_any_work(tmp_path, bad, match):
    from t2ilab.cli.edit import edit

    cfg = edit_cfg("ckpt_path=/does/not/exist.ckpt", f"inputs={tmp_path}", "prompt=a blue square",
                   f"out_dir={tmp_path / 'out'}", "logger=none", bad)
    with pytest.raises(ValueError, match=match):
        edit(cfg)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # two subprocesses (~30 s on 2 cores)
def test_train_vae_then_edit_through_the_cli_with_wandb(tmp_path):
    from t2ilab.compat.wandb import read_offline_run

    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "1"}

    def run(*args: str) -> None:
        r = subprocess.run([sys.executable, "-m", *args], env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"{args[0]} failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"

    cache = f"paths.cache_dir={tmp_path / 'cache'}"
    run("t2ilab.train", "model=vae", "debug=fast", "logger=csv", f"hydra.run.dir={tmp_path / 'train'}", cache,
        "data.num_train=64", "data.num_val=16", "data.batch_size=4", "model.net.base_channels=8",
        "model.net.max_channels=16")
    (inputs := tmp_path / "in").mkdir()
    write_png(inputs / "red.png", np.full((32, 32, 3), (220, 40, 40), np.uint8), "RGB")
    run("t2ilab.edit", f"ckpt_path={tmp_path / 'train' / 'checkpoints' / 'last.ckpt'}", f"inputs={inputs}",
        "prompt=a blue circle", "source_prompt=a red circle", "strength=1.0", f"hydra.run.dir={tmp_path / 'edit'}",
        cache, "metrics.clip.random_init=true", "metrics.classifier.max_train=64", "metrics.classifier.epochs=1")
    out = tmp_path / "edit" / "edits"
    assert sorted(p.name for p in out.iterdir()) == ["edits.jsonl", "edits_grid.png", "metrics.json", "red_edit.png",
                                                     "red_src.png"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"clip_directional", "ssim", "psnr", "prompt_accuracy"} <= set(metrics)
    logged = read_offline_run(next((tmp_path / "edit" / "wandb").glob("offline-run-*")))
    assert {"edit/ssim", "edit/clip_directional"} <= set(logged["summary"])
    assert logged["summary"]["edit/pairs/_type"] == "table-file"
