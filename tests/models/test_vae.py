"""VAE family: one step trains encoder and decoder, generate contract, temperature, reconstruct,
KL warm-up, EMA checkpoint round-trip and the divergence guard (tiny nets, CPU)."""

from __future__ import annotations

import pytest
import torch

from t2ilab.models.base import NonFiniteLossError
from t2ilab.models.losses import kl_normal


@pytest.mark.parametrize(("recon", "prior"), [("gaussian", "conditional"), ("mse", "standard"),
                                               ("bce", "conditional"), ("laplace", "standard")])
def test_one_step_trains_encoder_and_decoder(make_model, fake_batch, fit, snapshot, recon, prior):
    model = make_model("vae", recon=recon, prior=prior, free_bits=0.1, lr_warmup_steps=0, kl_warmup_steps=0)
    parts = [model.vae.encoder, model.vae.decoder] + ([model.vae.prior_net] if prior == "conditional" else [])
    before = [snapshot(p) for p in parts]
    fit(model, [fake_batch()], max_steps=1)
    for b, part in zip(before, parts):
        after = snapshot(part)
        assert any(not torch.equal(v, after[k]) for k, v in b.items())
    assert (model.vae.log_scale is not None) == (recon in ("gaussian", "laplace"))
    assert (model.vae.prior_net is not None) == (prior == "conditional")


def test_kl_normal():
    mu, logvar = torch.randn(3, 4), torch.randn(3, 4)
    torch.testing.assert_close(kl_normal(mu, logvar, mu, logvar), torch.zeros(3, 4))
    torch.testing.assert_close(kl_normal(mu, logvar, torch.zeros(3, 4), torch.zeros(3, 4)), kl_normal(mu, logvar))
    assert (kl_normal(mu, logvar) >= 0).all()


def test_generate_contract_and_temperature(make_model, conds, generators, perturb):
    model = make_model("vae", recon="bce")
    perturb(model.sampling_net)
    c = conds(3)
    x = model.generate(c, generator=generators(3))
    assert x.shape == (3, 3, 16, 16) and 0.0 <= x.min() and x.max() <= 1.0
    torch.testing.assert_close(model.generate(c, generator=generators(3)), x, rtol=0, atol=0)
    assert (model.generate(conds(3, seed=7), generator=generators(3)) - x).abs().amax(dim=(1, 2, 3)).min() > 1e-5
    cold = model.generate(c, generator=generators(3), temperature=0.0)
    torch.testing.assert_close(cold, model.generate(c, generator=generators(3, seed=100), temperature=0.0),
                               rtol=0, atol=0)
    assert not torch.equal(cold, x)


def test_reconstruct_and_28px(make_model, fake_batch):
    model = make_model("vae", image_size=28, channels=1)
    b = fake_batch(n=2, image_size=28, channels=1)
    r = model.reconstruct(b["image"], b["cond"])
    assert r.shape == (2, 1, 28, 28) and 0.0 <= r.min() and r.max() <= 1.0
    assert model.training  # mode restored


def test_kl_warmup(make_model):
    model = make_model("vae", beta=2.0, kl_warmup_steps=10)
    assert model.current_beta() == 0.0  # no trainer yet: global_step 0
    assert make_model("vae", beta=2.0, kl_warmup_steps=0).current_beta() == 2.0


def test_checkpoint_roundtrip_restores_ema(make_model, fake_batch, fit, roundtrip, conds, generators):
    model = make_model("vae", ema={"decay": 0.5, "warmup": False})
    trainer = fit(model, [fake_batch(seed=i) for i in range(2)])
    ema = model.ema.module.state_dict()
    loaded = roundtrip(trainer)
    for k, v in loaded.ema.module.state_dict().items():
        torch.testing.assert_close(v, ema[k], rtol=0, atol=0)
    c = conds(2)
    torch.testing.assert_close(loaded.generate(c, generator=generators(2)), model.generate(c, generator=generators(2)))


def test_nan_batch_stops_training(make_model, fake_batch, fit):
    model = make_model("vae")
    bad = fake_batch()
    bad["image"][1] = float("nan")
    with pytest.raises(NonFiniteLossError, match="train/"):
        fit(model, [bad])
