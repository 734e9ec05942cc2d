"""model.parameterization=edm (models/edm.py): the wrapper's epsilon is the EDM denoiser's, the loss is
EDM's weighted denoising error, sigma <-> timestep round-trips, training noise is log-normal, and an EDM
model trains, samples with every sampler and survives a checkpoint round trip."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDPMScheduler

from t2ilab.models.edm import EDMPrecond
from t2ilab.models.samplers import SAMPLERS, predicted_x0


class Affine(torch.nn.Module):
    """A stand-in F whose output depends on input, timestep and condition."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return 0.7 * x + 0.001 * t.float().view(-1, 1, 1, 1) + cond[:, :1].view(-1, 1, 1, 1)


def _precond(sigma_data: float = 0.5) -> EDMPrecond:
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    return EDMPrecond(Affine(), sched.alphas_cumprod, sigma_data)


def test_sigma_and_timestep_round_trip():
    p = _precond()
    t = torch.tensor([0.0, 10.5, 250.0, 999.0])
    torch.testing.assert_close(p.timestep_of(p.sigma_of(t)), t, atol=1e-3, rtol=0)
    a = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").alphas_cumprod[250]
    assert math.isclose(float(p.sigma_of(torch.tensor([250]))), math.sqrt((1 - a) / a), rel_tol=1e-4)


@pytest.mark.parametrize("t", [5, 300, 900])
def test_epsilon_output_is_the_edm_denoiser(t):
    p = _precond()
    g = torch.Generator().manual_seed(0)
    x0, n, cond = (torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 4, 4, generator=g),
                   torch.randn(3, 2, generator=g))
    tt = torch.full((3,), t)
    sigma = p.sigma_of(tt)
    x = x0 + sigma.view(-1, 1, 1, 1) * n
    d, _ = p.denoised(x, sigma, cond, t=tt)
    a = float(1 / (1 + sigma[0] ** 2))
    eps = p(x * math.sqrt(a), tt, cond)  # the VP input the samplers feed
    torch.testing.assert_close(predicted_x0(eps, x * math.sqrt(a), "epsilon", a), d, atol=1e-4, rtol=1e-4)


def test_loss_is_edm_weighted_denoising_error():
    p = _precond()
    x0, cond = torch.randn(64, 1, 4, 4), torch.randn(64, 2)
    torch.manual_seed(3)
    loss = p.loss(x0, cond, p_mean=-1.2, p_std=1.2)
    torch.manual_seed(3)  # the same sigma and noise draws, by hand
    sigma = torch.exp(-1.2 + 1.2 * torch.randn(64)).clamp(float(p.log_sigmas[0].exp()), float(p.log_sigmas[-1].exp()))
    x = x0 + sigma.view(-1, 1, 1, 1) * torch.randn_like(x0)
    d, _ = p.denoised(x, sigma, cond)
    weight = (sigma ** 2 + 0.25) / (sigma * 0.5) ** 2
    torch.testing.assert_close(loss, (weight.view(-1, 1, 1, 1) * (d - x0) ** 2).mean(), rtol=1e-4, atol=1e-5)


def test_edm_model_trains_and_samples_with_every_sampler(make_model, fake_batch, fit, snapshot, conds, generators,
                                                         roundtrip):
    model = make_model("diffusion", parameterization="edm", lr_warmup_steps=0, ema={"decay": 0.5, "warmup": False})
    assert model.prediction == "epsilon" and type(model.net).__name__ == "EDMPrecond"
    before = snapshot(model.net)
    trainer = fit(model, [fake_batch(seed=i) for i in range(2)])
    assert any(not torch.equal(v, snapshot(model.net)[k]) for k, v in before.items())
    c = conds(2)
    for name in SAMPLERS:
        x = model.generate(c, generator=generators(2), sampler=name, num_steps=3)
        assert x.shape == (2, 3, 16, 16) and torch.isfinite(x).all()
    x = model.generate(c, generator=generators(2))
    torch.testing.assert_close(roundtrip(trainer).generate(c, generator=generators(2)), x)


def test_edm_refuses_another_loss_weighting(make_model):
    with pytest.raises(ValueError, match="parameterization=edm brings its own loss weight"):
        make_model("diffusion", parameterization="edm", loss_weighting="min_snr")
