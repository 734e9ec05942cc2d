"""Language-free training (data.condition_source=image_embedding): batches carry the encoder's image
embeddings (cached per image), the LAFITE perturbation acts in training only, every family trains a
step on them, and an uncaptioned image folder is enough. Plumbing only: clip_tiny is random, its
image and text spaces are not aligned (docs/families.md says what a real run needs)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from t2ilab.utils.builders import build_datamodule, build_encoder, build_model

SHAPES = {"num_train": 24, "num_val": 8, "num_test": 8, "batch_size": 8, "image_size": 16, "seed": 0}

CONF = Path(__file__).resolve().parents[2] / "conf"


def _encoder(tmp_path):
    cfg = OmegaConf.load(CONF / "encoder/clip_tiny.yaml")
    cfg.cache_dir = str(tmp_path / "cache")
    return build_encoder(cfg)


def _shapes(encoder, **over):
    cfg = OmegaConf.merge(OmegaConf.load(CONF / "data/shapes.yaml"), SHAPES, over)
    cfg.condition_source = "image_embedding"
    dm = build_datamodule(cfg, encoder)
    dm.setup("fit")
    return dm


def test_batches_carry_cached_image_embeddings(tmp_path):
    enc = _encoder(tmp_path)
    dm = _shapes(enc)
    batch = next(iter(dm.train_dataloader()))
    images01 = (batch["image"] + 1) / 2
    assert torch.allclose(batch["cond"], enc.encode_image(images01), atol=1e-4)
    text = dm.encode(batch["caption"][:2])  # prompts stay text embeddings (sampling from text)
    assert not torch.allclose(text, batch["cond"][:2], atol=1e-2)
    assert dm.embedding_table() is None  # no caption mean to centre on
    dm.batches_on = torch.device("cpu")  # the in-memory fast path gives the same rows
    fast = dm.train_dataloader().dataset.__getitems__(batch["index"].tolist())
    assert torch.allclose(fast["cond"], batch["cond"])
    enc2 = _encoder(tmp_path)  # a rerun: every image embedding comes from the disk cache
    next(iter(_shapes(enc2).train_dataloader()))
    assert enc2.num_image_forward_batches == 0 and enc2.model is None


def test_lafite_perturbation_only_in_training(make_model):
    model = make_model("vae", center_cond=False, cond_noise=0.2)
    cond = torch.nn.functional.normalize(torch.randn(64, 16), dim=1)
    model.train()
    noisy = model.prepare_cond(cond)
    cos = torch.nn.functional.cosine_similarity(noisy, cond)
    assert torch.allclose(noisy.norm(dim=1), cond.norm(dim=1), atol=1e-5)
    assert 0.9 < cos.mean() < 0.995  # xi = 0.2: a small, norm-preserving tilt
    model.eval()
    assert torch.equal(model.prepare_cond(cond), cond)


TINY = {  # a few thousand parameters per family (as in conftest.py), cond_dim 64 = clip_tiny's
    "gan": {"z_dim": 8, "generator": {"base_channels": 8, "max_channels": 16, "emb_dim": 16},
            "discriminator": {"base_channels": 8, "max_channels": 16}},
    "vae": {"z_dim": 8, "net": {"base_channels": 8, "max_channels": 16, "emb_dim": 16}},
    "diffusion": {"net": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [],
                          "heads": 2, "dropout": 0.0}, "sampling": {"num_steps": 2}},
}


@pytest.mark.parametrize("family", ["diffusion", "gan", "vae"])
def test_every_family_trains_on_image_embeddings(family, tmp_path, fit):
    enc = _encoder(tmp_path)
    dm = _shapes(enc)
    cfg = OmegaConf.merge(OmegaConf.load(CONF / f"model/{family}.yaml"), TINY[family],
                          {"image_size": 16, "channels": 3, "cond_noise": 0.1})
    torch.manual_seed(0)
    model = build_model(cfg, enc.dim)
    before = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    batch = next(iter(dm.train_dataloader()))
    fit(model, [batch], max_steps=1)
    changed = [k for k, v in model.state_dict().items() if k in before and not torch.equal(v, before[k])]
    assert changed, "one step on image embeddings must update the weights"
    out = model.generate(dm.encode(["a red circle", "a blue square"]), generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 16, 16) and torch.isfinite(out).all()


def test_folder_without_captions(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(6):
        Image.new("RGB", (20, 20), (40 * i, 10, 200 - 30 * i)).save(folder / f"{i}.png")
    cfg = OmegaConf.create({"_target_": "t2ilab.data.captions.CaptionFolderDataModule", "image_dir": str(folder),
                            "captions_file": None, "image_size": 16, "batch_size": 4, "val_fraction": 0.3,
                            "condition_source": "image_embedding"})
    dm = build_datamodule(cfg, _encoder(tmp_path))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["cond"].shape == (4, 64) and batch["image"].shape == (4, 3, 16, 16)
    cfg.condition_source = "text"
    with pytest.raises(ValueError, match="data.condition_source=image_embedding"):
        build_datamodule(cfg, _encoder(tmp_path)).setup("fit")


def test_tokens_refused_for_language_free():
    run = OmegaConf.create({"model": {"cond_type": "tokens"}, "data": {"condition_source": "image_embedding"}})
    enc_cfg = OmegaConf.merge(OmegaConf.load(CONF / "encoder/clip_tiny.yaml"), {"cache_dir": None})
    with pytest.raises(ValueError, match="model.cond_type=pooled"):
        build_encoder(enc_cfg, run)
