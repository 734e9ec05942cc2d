"""The VAE's learned latent prior (model.latent_prior=diffusion, models/latent_prior.py): on a toy whose
"decoder" reads the class from the latent, prior samples decode to the caption's class (the Gaussian prior
gets half right); inside the VAE it trains on the posterior latents without touching the VAE, is carried by
the EMA copy through a checkpoint, and changes what generate draws."""

from __future__ import annotations

import pytest
import torch

from t2ilab.models.latent_prior import DiffusionPrior


def _toy_latents(n: int, y: torch.Tensor, z_dim: int) -> torch.Tensor:
    """Two classes: latent dim 0 at -2 (class 0) or +2 (class 1), the rest N(0, 0.3^2)."""
    u = torch.randn(n, z_dim) * 0.3
    u[:, 0] += torch.where(y == 1, 2.0, -2.0)
    return u


def test_prior_samples_decode_to_the_right_class_on_a_toy():
    torch.manual_seed(0)
    z_dim, cond_dim = 4, 8
    prior = DiffusionPrior(z_dim, cond_dim, width=64, depth=2)
    conds = torch.nn.functional.normalize(torch.randn(2, cond_dim), dim=1)
    opt = torch.optim.Adam(prior.parameters(), lr=3e-3)
    for _ in range(300):
        y = torch.randint(0, 2, (128,))
        loss = prior.loss(_toy_latents(128, y, z_dim), conds[y])
        opt.zero_grad()
        loss.backward()
        opt.step()
    y = torch.arange(200) % 2
    gens = [torch.Generator().manual_seed(i) for i in range(200)]
    noise = torch.stack([torch.randn(z_dim, generator=g) for g in gens])
    u = prior.sample(noise, conds[y], torch.zeros(200, cond_dim), gens, lambda shape, g: torch.randn(shape),
                     num_steps=20)

    def decode(latents: torch.Tensor) -> torch.Tensor:  # the toy decoder: the class is the sign of dim 0
        return (latents[:, 0] > 0).long()

    assert (decode(u) == y).float().mean() >= 0.95
    assert (decode(noise) == y).float().mean() <= 0.65  # the Gaussian prior ignores the caption here
    assert 1.5 < u[:, 0].abs().mean() < 2.5 and 0.15 < u[:, 1:].std() < 0.45  # modes and their spread


def test_vae_trains_its_latent_prior_and_samples_from_it(make_model, fake_batch, fit, snapshot, conds, generators,
                                                         roundtrip):
    model = make_model("vae", latent_prior="diffusion", latent_prior_width=32, latent_prior_depth=1,
                       lr_warmup_steps=0, ema={"decay": 0.5, "warmup": False}, sampling={"prior_steps": 3})
    prior = model.latent_prior_net
    assert prior is not None and model.sampling_net.latent_prior is not None  # the EMA copy carries it
    before = snapshot(prior)
    trainer = fit(model, [fake_batch(seed=i) for i in range(2)])
    assert any(not torch.equal(v, snapshot(prior)[k]) for k, v in before.items())
    assert "train/prior_loss" in trainer.callback_metrics
    c = conds(3)
    x = model.generate(c, generator=generators(3))
    assert x.shape == (3, 3, 16, 16) and 0.0 <= x.min() and x.max() <= 1.0
    torch.testing.assert_close(model.generate(c, generator=generators(3)), x, rtol=0, atol=0)
    loaded = roundtrip(trainer)
    torch.testing.assert_close(loaded.generate(c, generator=generators(3)), x)
    # the prior's draw is what generate decodes: without it (same weights, same noise) the images differ
    object.__setattr__(model.sampling_net, "latent_prior", None)
    assert not torch.allclose(model.generate(c, generator=generators(3)), x)


def test_prior_loss_leaves_the_vae_alone(make_model, fake_batch):
    model = make_model("vae", latent_prior="diffusion", latent_prior_width=32, latent_prior_depth=1)
    b = fake_batch()
    _, _, prior_loss = model.elbo_terms(b["image"], model.prepare_cond(b["cond"]))
    prior_loss.backward()
    assert all(p.grad is None for n, p in model.vae.named_parameters() if not n.startswith("latent_prior."))
    assert any(p.grad is not None for p in model.latent_prior_net.parameters())


def test_latent_prior_needs_the_vector_latent(make_model):
    with pytest.raises(ValueError, match="latent_prior=diffusion needs model.net.latent=vector"):
        make_model("vae", latent_prior="diffusion", prior="standard", net={"latent": "spatial", "downsample": 4})
    with pytest.raises(ValueError, match="model.latent_prior='flow'"):
        make_model("vae", latent_prior="flow")


def _decoded_latents(model, cond: torch.Tensor, gens, **sampling) -> torch.Tensor:
    """The z that ``generate`` hands the decoder (captured from the sampling net's ``decode``)."""
    net, seen = model.sampling_net, []
    decode = net.decode
    object.__setattr__(net, "decode", lambda z, c: seen.append(z) or decode(z, c))
    try:
        model.generate(cond, generator=gens, **sampling)
    finally:
        object.__delattr__(net, "decode")
    return seen[0]


@pytest.mark.parametrize("frame", ["caption", "shared"])
def test_latent_prior_frame_whitens_by_the_caption_or_by_the_null_caption(make_model, fake_batch, conds, generators,
                                                                          perturb, frame):
    model = make_model("vae", latent_prior="diffusion", latent_prior_width=32, latent_prior_depth=1,
                       latent_prior_frame=frame, sampling={"prior_steps": 2})
    perturb(model.vae)
    perturb(model.sampling_net)
    b = fake_batch()
    cond = model.prepare_cond(b["cond"])
    mu = torch.randn(cond.shape[0], model.z_dim)
    object.__setattr__(model.vae, "encode", lambda x, c: (mu, torch.full_like(mu, -60.0)))  # z = mu exactly
    seen = []
    object.__setattr__(model.latent_prior_net, "loss", lambda u, c: seen.append(u) or u.sum() * 0)
    model.elbo_terms(b["image"], cond)
    m, logvar = model.vae.prior(cond if frame == "caption" else model.null_cond(cond.shape[0]))
    torch.testing.assert_close(seen[0], (mu - m) * torch.exp(-0.5 * logvar))
    # prior guidance 0 = the prior's caption-free branch: in the shared frame the drawn z no longer
    # depends on the caption (one frame for every caption); in the caption frame mu(c) still moves it
    z_a = _decoded_latents(model, conds(3), generators(3), prior_guidance=0.0)
    z_b = _decoded_latents(model, conds(3, seed=7), generators(3), prior_guidance=0.0)
    assert torch.allclose(z_a, z_b) == (frame == "shared")
    assert not torch.allclose(_decoded_latents(model, conds(3), generators(3)), z_a)  # w = 1 follows the caption


def test_latent_prior_frame_is_checked(make_model):
    with pytest.raises(ValueError, match="model.latent_prior_frame='null'"):
        make_model("vae", latent_prior="diffusion", latent_prior_frame="null")
