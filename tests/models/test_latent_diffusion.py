"""Latent diffusion: the spatial-latent autoencoder mode of the VAE family (shapes, unconditional,
vector mode unchanged), ``LatentDiffusionModule`` on a tiny trained autoencoder (frozen, scale factor
estimated once and stored, self-contained checkpoint), clear errors for a wrong autoencoder, and the
chain autoencoder -> latent diffusion -> samples through the real entry points."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from PIL import Image

from t2ilab.models.checkpoint import load_model

LDM = "t2ilab.models.latent_diffusion.LatentDiffusionModule"
SPATIAL = {"prior": "standard", "recon": "mse", "beta": 1e-3, "kl_warmup_steps": 0, "lr_warmup_steps": 0,
           "net": {"latent": "spatial", "latent_channels": 4, "downsample": 4}}


def trained_ckpt(model, batches, fit, path: Path, steps: int = 2) -> Path:
    trainer = fit(model, batches, max_steps=steps)
    trainer.save_checkpoint(path)
    return path


@pytest.fixture
def ae_ckpt(make_model, fake_batch, fit, tmp_path) -> Path:
    """A tiny spatial autoencoder (16 px RGB -> 4x4x4 latents) trained 2 steps, saved by a real Trainer."""
    return trained_ckpt(make_model("vae", **SPATIAL), [fake_batch(seed=i) for i in range(2)], fit,
                        tmp_path / "ae.ckpt")


@pytest.fixture
def make_ldm(make_model):
    """``make_ldm(autoencoder_ckpt, image_size=16, channels=3, **overrides)``: a tiny
    ``LatentDiffusionModule`` (the diffusion family's tiny UNet, on the latent map)."""

    def make(ckpt: Path | None, image_size: int = 16, channels: int = 3, **overrides):
        return make_model("diffusion", image_size, channels, **{"_target_": LDM, "autoencoder_ckpt": ckpt and str(ckpt),
                                                                **overrides})

    return make


# -- the spatial autoencoder --------------------------------------------------------------------
def test_spatial_autoencoder_shapes_training_and_unconditional(make_model, fake_batch, fit, snapshot, conds):
    model = make_model("vae", **SPATIAL)
    assert model.spatial and model.latent_shape == (4, 4, 4)
    b = fake_batch()
    z = model.encode_latents(b["image"])
    assert z.shape == (4, 4, 4, 4)
    assert model.decode_latents(z).shape == (4, 3, 16, 16)
    mu, _ = model.vae.encode(b["image"], conds(4, seed=5))
    torch.testing.assert_close(mu, model.vae.encode(b["image"], None)[0], rtol=0, atol=0)  # captions ignored
    x = model.generate(conds(3))  # samples of the N(0, I) prior: same contract as every family
    assert x.shape == (3, 3, 16, 16) and 0.0 <= x.min() and x.max() <= 1.0
    before = [snapshot(model.vae.encoder), snapshot(model.vae.decoder)]
    fit(model, [b], max_steps=1)
    for old, part in zip(before, [model.vae.encoder, model.vae.decoder]):
        assert any(not torch.equal(v, snapshot(part)[k]) for k, v in old.items())
    with pytest.raises(ValueError, match="model.prior=conditional needs model.net.latent=vector"):
        make_model("vae", **{**SPATIAL, "prior": "conditional"})
    with pytest.raises(ValueError, match="model.net.downsample=3"):
        make_model("vae", **{**SPATIAL, "net": {"latent": "spatial", "downsample": 3}})


def test_vector_mode_is_the_default_and_unchanged(make_model, conds, generators):
    default, explicit = make_model("vae"), make_model("vae", net={"latent": "vector"})
    assert default.latent_shape == (8,) and not default.spatial
    a, b = default.state_dict(), explicit.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    torch.testing.assert_close(default.generate(conds(2), generator=generators(2)),
                               explicit.generate(conds(2), generator=generators(2)), rtol=0, atol=0)
    with pytest.raises(ValueError, match="need the spatial autoencoder"):
        default.encode_latents(torch.zeros(1, 3, 16, 16))


# -- latent diffusion ---------------------------------------------------------------------------
def test_latent_diffusion_trains_on_frozen_latents_and_reloads_without_the_autoencoder(
        ae_ckpt, make_ldm, fake_batch, fit, tmp_path, conds, generators):
    model = make_ldm(ae_ckpt)
    assert model.image_shape == (3, 16, 16) and model.sample_shape == (4, 4, 4)
    assert model.net.stem.in_channels == 4 and not bool(model.scale_factor_set)
    ae_before = {k: v.clone() for k, v in model.autoencoder.state_dict().items()}
    trainer = fit(model, [fake_batch(seed=i) for i in range(2)], max_steps=2)
    scale = float(model.scale_factor)
    assert bool(model.scale_factor_set) and scale > 0 and scale != 1.0
    assert not model.autoencoder.training and not any(p.requires_grad for p in model.autoencoder.parameters())
    assert all(torch.equal(v, model.autoencoder.state_dict()[k]) for k, v in ae_before.items())  # frozen
    opt_params = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert not opt_params & {id(p) for p in model.autoencoder.parameters()}
    assert not any(k.startswith("ema.module.autoencoder") for k in model.state_dict())
    assert trainer.callback_metrics["train/latent_scale_factor"] == pytest.approx(scale)

    path = tmp_path / "ldm.ckpt"
    trainer.save_checkpoint(path)
    ae_ckpt.unlink()  # the checkpoint is self-contained
    loaded, cfg = load_model(path)
    assert float(loaded.scale_factor) == scale and bool(loaded.scale_factor_set)
    assert json.loads(cfg.model.autoencoder_config)["model"]["net"]["latent"] == "spatial"
    x = loaded.generate(conds(2), generator=generators(2))
    assert x.shape == (2, 3, 16, 16) and 0.0 <= x.min() and x.max() <= 1.0
    torch.testing.assert_close(x, model.generate(conds(2), generator=generators(2)))


def test_scale_factor_is_not_reestimated_on_resume(ae_ckpt, make_ldm, fake_batch, fit, tmp_path):
    model = make_ldm(ae_ckpt)
    trainer = fit(model, [fake_batch(seed=0)], max_steps=1)
    path = tmp_path / "one.ckpt"
    trainer.save_checkpoint(path)
    scale = float(model.scale_factor)
    resumed = make_ldm(ae_ckpt)
    batches = [fake_batch(seed=i) for i in range(2)]
    for b in batches:
        b["image"] = b["image"] * 0.1  # a re-estimate would change the factor
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, limit_val_batches=0, default_root_dir=str(tmp_path)).fit(
        resumed, train_dataloaders=loader, ckpt_path=str(path))
    assert resumed.global_step == 2 and float(resumed.scale_factor) == scale
    assert float(make_ldm(ae_ckpt, scale_factor=0.5).scale_factor) == 0.5  # a fixed factor is used as given


def test_wrong_autoencoder_checkpoints_are_refused_clearly(ae_ckpt, make_ldm, make_model, fake_batch, fit, tmp_path):
    diffusion = trained_ckpt(make_model("diffusion"), [fake_batch()], fit, tmp_path / "diffusion.ckpt", steps=1)
    wrong_family = r"model.autoencoder_ckpt=.*'diffusion' checkpoint.*experiment=fmnist_autoencoder"
    with pytest.raises(ValueError, match=wrong_family):
        make_ldm(diffusion)
    vector = trained_ckpt(make_model("vae"), [fake_batch()], fit, tmp_path / "vector.ckpt", steps=1)
    with pytest.raises(ValueError, match="vector-latent VAE.*model.net.latent=spatial"):
        make_ldm(vector)
    with pytest.raises(ValueError, match=r"trained on 3x16x16 images .* this run's are 1x32x32.*data.image_size"):
        make_ldm(ae_ckpt, image_size=32, channels=1)
    with pytest.raises(FileNotFoundError, match="model.autoencoder_ckpt=.*does not exist.*fmnist_autoencoder"):
        make_ldm(tmp_path / "missing.ckpt")
    with pytest.raises(ValueError, match="model.autoencoder_ckpt is required"):
        make_ldm(None)


# -- through the entry points -------------------------------------------------------------------
SMALL = ["debug=fast", "logger=csv", "data.num_train=32", "data.num_val=8", "data.batch_size=4",
         "callbacks.sample_grid.num_prompts=1", "callbacks.sample_grid.num_per_prompt=1"]


def _run(module: str, *args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", f"t2ilab.{module}", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert not check or proc.returncode == 0, f"t2ilab.{module} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow  # ~20 s of subprocesses on 2 cores; the in-process tests above run by default
def test_autoencoder_then_latent_diffusion_then_sample_through_the_entry_points(tmp_path):
    cache = f"paths.cache_dir={tmp_path / 'cache'}"
    ae_dir, ldm_dir, out_dir = tmp_path / "ae", tmp_path / "ldm", tmp_path / "samples"
    _run("train", "model=autoencoder", *SMALL, "trainer.max_steps=2", "model.net.base_channels=8",
         "model.net.max_channels=16", f"hydra.run.dir={ae_dir}", cache, cwd=tmp_path)
    ae = ae_dir / "checkpoints" / "last.ckpt"
    _run("train", "model=latent_diffusion", f"model.autoencoder_ckpt={ae}", *SMALL, "model.net.base_channels=16",
         "model.net.num_res_blocks=1", "model.sampling.num_steps=2", f"hydra.run.dir={ldm_dir}", cache, cwd=tmp_path)
    ckpt = ldm_dir / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["t2ilab"]["family"] == "latent_diffusion" and state["t2ilab"]["image_shape"] == [3, 32, 32]
    assert bool(state["state_dict"]["scale_factor_set"]) and float(state["state_dict"]["scale_factor"]) != 1.0
    assert any(k.startswith("autoencoder.") for k in state["state_dict"])
    ae.unlink()  # sampling needs only the latent diffusion checkpoint
    _run("sample", f"ckpt_path={ckpt}", 'prompts=["a red circle"]', f"out_dir={out_dir}", "num_per_prompt=2",
         cache, cwd=tmp_path)
    rows = [json.loads(line) for line in (out_dir / "prompts.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        with Image.open(out_dir / r["file"]) as im:
            assert im.size == (32, 32) and im.mode == "RGB"
    from t2ilab.evaluation.inception import make_random_weights  # eval: the same metrics as every family

    weights = make_random_weights(tmp_path / "inception-random.pth")
    _run("eval", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'eval'}", cache, "logger=none",
         "metrics.num_samples=16", "metrics.batch_size=8", "metrics.kid_subset_size=8", "metrics.isc_splits=2",
         f"metrics.inception_weights={weights}", "metrics.clip.random_init=true", "metrics.classifier.max_train=64",
         cwd=tmp_path)
    result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert result["meta"]["checkpoint"]["family"] == "latent_diffusion"
    assert all(math.isfinite(result[k]) for k in ("fid", "clip_score", "prompt_accuracy"))
