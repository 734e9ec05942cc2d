"""Diffusion family: loss/step/generate shapes, guidance, per-image seeding, EMA in checkpoints,
the divergence guard. Tiny UNet (16 px, base 8) built from the real conf/model/diffusion.yaml."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from t2ilab.models.base import NonFiniteLossError
from t2ilab.models.checkpoint import load_model
from t2ilab.utils.builders import build_model
from t2ilab.utils.config import CONF_DIR

D = 16  # cond_dim


def tiny_cfg(**over):
    cfg = OmegaConf.load(CONF_DIR / "model" / "diffusion.yaml")
    cfg.image_size, cfg.channels = 16, 3
    cfg.net.update(base_channels=8, channel_mult=[1, 2], num_res_blocks=1, attn_resolutions=[8], heads=2, dropout=0.0)
    cfg.sampling.num_steps = 4
    cfg.lr_warmup_steps = 0
    for k, v in over.items():
        OmegaConf.update(cfg, k, v)
    return cfg


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model(tiny_cfg(), D)


def batch(n=4, seed=0, nan=False):
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(n, 3, 16, 16, generator=g) * 2 - 1
    if nan:
        img[0, 0, 0, 0] = float("nan")
    return {"image": img, "cond": torch.randn(n, D, generator=g), "caption": [f"c{i}" for i in range(n)]}


def gens(n, seed=0):
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_loss_is_finite_scalar_with_gradients_for_each_parameterisation(prediction, schedule):
    m = build_model(tiny_cfg(prediction=prediction, schedule=schedule), D)
    b = batch()
    loss = m.diffusion_loss(b["image"], m.prepare_cond(b["cond"]))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    # the zero-initialised output conv is where the first gradient must arrive
    assert m.net.out[-1].weight.grad.abs().sum() > 0


def test_generate_shape_range_and_per_image_determinism(model):
    cond = torch.randn(3, D)
    a = model.generate(cond, generator=gens(3))
    assert a.shape == (3, 3, 16, 16) and a.min() >= 0 and a.max() <= 1
    # image i depends only on generator i: generating it alone gives the same pixels
    alone = model.generate(cond[1:2], generator=gens(1, seed=1))
    torch.testing.assert_close(alone[0], a[1], atol=1e-5, rtol=0)
    assert not torch.allclose(a[0], model.generate(cond[:1], generator=gens(1, seed=7))[0])


def test_guidance_and_caption_change_the_output(model):
    # give the net non-trivial conditioning: zero-initialised output layers would hide it
    with torch.no_grad():
        for p in model.ema.module.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        model.null_embedding.normal_()
    cond = torch.randn(2, D)
    g1 = model.generate(cond, generator=gens(2), guidance_scale=1.0)
    g5 = model.generate(cond, generator=gens(2), guidance_scale=5.0)
    assert (g1 - g5).abs().mean() > 1e-3
    other = model.generate(cond.flip(0), generator=gens(2), guidance_scale=1.0)
    assert (g1 - other).abs().mean() > 1e-3


def test_unknown_sampling_option_is_a_clear_error(model):
    with pytest.raises(TypeError, match="guidance_scale"):
        model.generate(torch.randn(1, D), guidence=2.0)
    with pytest.raises(Exception, match="sampling has unknown keys"):  # wrapped by hydra.instantiate
        build_model(tiny_cfg(**{"sampling.steps": 3}), D)


class ListData(L.LightningDataModule):
    def __init__(self, n=8, nan_at=None):
        super().__init__()
        self.items = [batch(4, seed=i, nan=(i == nan_at)) for i in range(n)]

    def train_dataloader(self):
        return DataLoader(self.items, batch_size=None)


def fit(model, tmp_path, steps, data=None, **kw):
    trainer = L.Trainer(max_steps=steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path, accelerator="cpu", callbacks=kw.pop("callbacks", None), **kw)
    trainer.fit(model, datamodule=data or ListData())
    return trainer


def test_training_updates_net_and_ema_and_checkpoint_restores_ema_exactly(model, tmp_path):
    model.run_config = {"model": OmegaConf.to_container(tiny_cfg())}
    before = {k: v.clone() for k, v in model.ema.module.state_dict().items()}
    net_before = [p.clone() for p in model.net.parameters()]
    trainer = fit(model, tmp_path, 3, enable_checkpointing=False)
    assert any(not torch.equal(a, b) for a, b in zip(net_before, model.net.parameters()))
    ema = model.ema.module.state_dict()
    assert any(not torch.equal(before[k], ema[k]) for k in ema)
    # EMA differs from the raw weights (it is an average, not a copy)
    assert any(not torch.equal(ema[k], v) for k, v in model.net.state_dict().items() if v.is_floating_point())
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    loaded, cfg = load_model(path)
    assert cfg.model.net.base_channels == 8
    for k, v in loaded.ema.module.state_dict().items():
        assert torch.equal(v, ema[k]), k
    assert int(loaded.ema.n_averaged) == int(model.ema.n_averaged) == 3
    cond = torch.randn(2, D)
    torch.testing.assert_close(loaded.generate(cond, generator=gens(2)), model.generate(cond, generator=gens(2)))


def test_nan_loss_stops_training_before_the_update_and_names_the_last_checkpoint(model, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    ckpt = ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True, every_n_train_steps=1, save_top_k=-1)
    with pytest.raises(NonFiniteLossError, match=r"non-finite train/loss.*global step 2.*last\.ckpt") as e:
        fit(model, tmp_path, 10, data=ListData(nan_at=2), callbacks=[ckpt])
    assert "ckpt_path=" in str(e.value)
    assert (tmp_path / "ck" / "last.ckpt").is_file()
    good = torch.load(tmp_path / "ck" / "last.ckpt", weights_only=False)
    assert good["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in good["state_dict"].values() if v.is_floating_point())


def test_bf16_mixed_precision_trains_and_generates_float32(model, tmp_path):
    """trainer.precision=bf16-mixed (the gpu preset) runs the same module; losses stay finite."""
    fit(model, tmp_path, 2, enable_checkpointing=False, precision="bf16-mixed")
    assert all(torch.isfinite(p).all() for p in model.net.parameters())
    out = model.generate(torch.randn(2, D), generator=gens(2))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
