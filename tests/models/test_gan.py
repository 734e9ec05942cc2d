"""GAN family: optimiser isolation, generate contract, truncation, penalties, DiffAugment, EMA
checkpoint round-trip and the divergence guard (tiny nets, CPU)."""

from __future__ import annotations

import math

import pytest
import torch

from t2ilab.models.base import NonFiniteLossError
from t2ilab.models.losses import (contrastive_loss, d_fake_loss, d_real_loss, g_adv_loss, gradient_penalty,
                                  mode_seeking_ratio)
from t2ilab.nets.diffaug import diff_augment


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_each_optimiser_updates_only_its_network(make_model, fake_batch, fit, snapshot, monkeypatch):
    """A real Trainer runs training_step; around every optimiser update we record which of G / D
    changed: the D update leaves G untouched and the G update leaves D untouched."""
    model = make_model("gan", gp="r1", gp_weight=1.0, mismatch_weight=0.5, diffaug="color,translation",
                       diversity_weight=1.0, contrastive_weight=1.0, discriminator={"mbstd_group": 2})
    updates, original = [], type(model)._update

    def recording_update(self, opt, loss):
        g0, d0 = snapshot(self.generator), snapshot(self.discriminator)
        original(self, opt, loss)
        updates.append((_changed(g0, snapshot(self.generator)), _changed(d0, snapshot(self.discriminator))))

    monkeypatch.setattr(type(model), "_update", recording_update)
    trainer = fit(model, [fake_batch(seed=i) for i in range(2)], gradient_clip_val=0.5)
    assert model.grad_clip == 0.5 and trainer.gradient_clip_val is None  # taken over from the trainer
    assert len(updates) == 4 and trainer.global_step == 2  # per batch: D then G; one step = one batch
    for i, (g_changed, d_changed) in enumerate(updates):
        if i % 2 == 0:  # discriminator update (incl. its contrastive heads)
            assert d_changed and not g_changed
            assert {"image_head.weight", "text_head.1.weight"} <= d_changed
        else:
            assert g_changed and not d_changed


def test_generate_contract(make_model, conds, generators, perturb):
    model = make_model("gan")
    perturb(model.sampling_net)
    c = conds(3)
    x = model.generate(c, generator=generators(3))
    assert x.shape == (3, 3, 16, 16) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    torch.testing.assert_close(model.generate(c, generator=generators(3)), x, rtol=0, atol=0)
    other = model.generate(conds(3, seed=7), generator=generators(3))
    assert (other - x).abs().amax(dim=(1, 2, 3)).min() > 1e-4  # every sample depends on its caption
    one = model.generate(c[1:2], generator=generators(1, seed=1))  # batching never changes a sample
    torch.testing.assert_close(one[0], x[1])
    with pytest.raises(TypeError, match="unknown options"):
        model.generate(c, num_steps=3)


def test_28px_and_truncation(make_model, generators):
    model = make_model("gan", image_size=28, channels=1)
    assert model.generate(torch.randn(2, 16), generator=generators(2)).shape == (2, 1, 28, 28)
    z = model.sample_z(256, generators(256), truncation=0.5)
    assert z.abs().max() <= 0.5 and z.std() > 0.2  # truncated, not collapsed
    free = model.sample_z(256, generators(256))
    assert free.abs().max() > 2.0
    assert model.generate(torch.randn(2, 16), generator=generators(2), truncation=0.5).shape == (2, 1, 28, 28)


@pytest.mark.parametrize("kind", ["r1", "ma_gp"])
def test_gradient_penalties_finite_positive(make_model, fake_batch, kind):
    model = make_model("gan")
    b = fake_batch()
    x = b["image"].requires_grad_(True)
    c = b["cond"].clone().requires_grad_(True)
    gp = gradient_penalty(kind, model.discriminator(x, c), [x, c] if kind == "ma_gp" else [x])
    assert torch.isfinite(gp) and gp > 0
    gp.backward()  # differentiable w.r.t. D's weights (create_graph)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.discriminator.parameters())


def test_diffaugment_differentiable_keeps_shape():
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    y = diff_augment(x * 2 - 1, "color,translation,cutout")
    assert y.shape == x.shape
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="unknown DiffAugment"):
        diff_augment(x, "color,rotate")


def test_checkpoint_roundtrip_restores_ema(make_model, fake_batch, fit, roundtrip, conds, generators):
    model = make_model("gan", ema={"decay": 0.5, "warmup": False})
    trainer = fit(model, [fake_batch(seed=i) for i in range(2)])
    ema = model.ema.module.state_dict()
    assert any(not torch.equal(v, model.generator.state_dict()[k]) for k, v in ema.items())  # EMA != live
    loaded = roundtrip(trainer)
    assert type(loaded) is type(model)
    for k, v in loaded.ema.module.state_dict().items():
        torch.testing.assert_close(v, ema[k], rtol=0, atol=0)
    c = conds(2)
    torch.testing.assert_close(loaded.generate(c, generator=generators(2)), model.generate(c, generator=generators(2)))


def test_nan_batch_stops_training(make_model, fake_batch, fit, snapshot):
    model = make_model("gan")
    bad = fake_batch()
    bad["image"][0, 0, 0, 0] = float("nan")
    before = snapshot(model.discriminator)
    with pytest.raises(NonFiniteLossError, match="train/d_loss"):
        fit(model, [bad])
    assert not _changed(before, snapshot(model.discriminator))  # stopped before the update


def test_contrastive_loss_picks_own_caption_and_masks_shared_classes():
    a, b, c = torch.eye(3)
    img, txt = torch.stack([a, b, c]), torch.stack([a, b, c])
    none = torch.zeros(3, 3, dtype=torch.bool)
    assert contrastive_loss(img, txt, none, 0.1) < 1e-3
    assert contrastive_loss(img, txt.roll(1, 0), none, 0.1) > 5.0  # wrong captions: large loss
    # items 0 and 1 share a class and both images look like "a": unmasked, each row has two
    # equally good captions (>= log 2); masked, the other same-class caption is not a negative
    img, txt = torch.stack([a, a, c]), torch.stack([a, a, c])
    assert contrastive_loss(img, txt, none, 0.1) > 0.4  # (2 log 2) / 3 = 0.46
    same = torch.eye(3, dtype=torch.bool)
    same[0, 1] = same[1, 0] = True
    assert contrastive_loss(img, txt, same, 0.1) < 1e-3


def test_pooled_mode_seeking_ratio_ignores_texture_and_sees_shape():
    """Two draws that differ only by a checkerboard (the hatching the pixel ratio rewards) are the same image
    at pool 4; two that differ in a filled block differ at every pool by the same mean amount."""
    z_a, z_b = torch.zeros(2, 8), torch.ones(2, 8)
    base = torch.zeros(2, 1, 28, 28)
    checker = (torch.arange(28)[:, None] + torch.arange(28)[None, :]) % 2 * 2.0 - 1.0  # +-1, mean 0
    hatched = base + 0.5 * checker
    assert mode_seeking_ratio(base, hatched, z_a, z_b, pool=1) == pytest.approx(0.5)
    assert mode_seeking_ratio(base, hatched, z_a, z_b, pool=4) == pytest.approx(0.0, abs=1e-6)
    block = base.clone()
    block[..., 4:20, 8:24] = 1.0  # a 16 x 16 silhouette: aligned with the 4 x 4 pool cells
    expected = 256 / 784
    assert mode_seeking_ratio(base, block, z_a, z_b, pool=1) == pytest.approx(expected)
    assert mode_seeking_ratio(base, block, z_a, z_b, pool=4) == pytest.approx(expected)


def test_pooled_diversity_term_reaches_the_generator(make_model, conds):
    model = make_model("gan", diversity_weight=1.0, diversity_pool=4)
    c = model.prepare_cond(conds(4))
    loss, stats = model.generator_loss(c, model.same_pairs({}, c))
    assert stats["diversity"] > 0
    (1.0 / stats["diversity"]).backward()
    assert model.generator.fc.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_generator_upsampling_mode_reaches_the_blocks(mode):
    """nearest hands the next block 2 x 2 blocks of equal values; bilinear interpolates between them."""
    from t2ilab.nets.gan_nets import Generator

    g = Generator(channels=1, cond_dim=16, image_size=28, z_dim=8, base_channels=8, max_channels=16, upsample=mode)
    seen = []
    g.stages[1][0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    g(torch.randn(2, 8), torch.randn(2, 16))
    h = seen[0]  # the 14 x 14 input of the second stage
    blocky = torch.equal(h[..., 0::2, 0::2], h[..., 1::2, 1::2])
    assert blocky == (mode == "nearest")
    with pytest.raises(ValueError, match="upsample='bicubic'"):
        Generator(channels=1, cond_dim=16, image_size=28, upsample="bicubic")


def test_contrastive_term_trains_generator(make_model, conds):
    """contrastive_weight > 0: the G loss contains the term and its gradient reaches G;
    = 0: D is built without the heads (no unused parameters under DDP)."""
    assert not hasattr(make_model("gan").discriminator, "image_head")
    model = make_model("gan", contrastive_weight=1.0)
    c = model.prepare_cond(conds(4))
    loss, stats = model.generator_loss(c, model.same_pairs({}, c))
    assert stats["g_contrastive"] > 0
    stats["g_contrastive"].backward()  # the term alone
    assert model.generator.fc.weight.grad.abs().sum() > 0
    assert model.discriminator.image_head.weight.grad.abs().sum() > 0  # (toggled off in training)


@pytest.mark.parametrize("kind", ["hinge", "ns"])
def test_adversarial_losses(kind, make_model, fake_batch):
    """Both losses: D's loss falls as it separates reals from fakes; G's loss falls as D is fooled."""
    lo, hi = torch.full((4,), -3.0), torch.full((4,), 3.0)
    assert d_real_loss(kind, hi) < d_real_loss(kind, lo) and d_fake_loss(kind, lo) < d_fake_loss(kind, hi)
    assert g_adv_loss(kind, hi) < g_adv_loss(kind, lo)
    if kind == "ns":  # logistic: at D = 0 each term is log 2; never exactly 0 (no hinge margin)
        torch.testing.assert_close(d_real_loss(kind, torch.zeros(3)), torch.tensor(math.log(2)))
        assert d_real_loss(kind, hi) > 0
    else:
        assert d_real_loss(kind, hi) == 0 and d_fake_loss(kind, lo) == 0
    model = make_model("gan", adv_loss=kind)
    c = model.prepare_cond(fake_batch()["cond"])
    loss, _ = model.discriminator_loss(fake_batch()["image"], c, model.same_pairs({}, c), train=False)
    assert torch.isfinite(loss)


def test_integer_betas_from_the_command_line(make_model):
    """`model.optimizer_g.betas=[0,0.99]` composes to (int, float), which torch.optim.Adam rejects;
    the optimisers are built with float betas instead."""
    model = make_model("gan", optimizer_g={"betas": [0, 0.99]}, optimizer_d={"betas": [0, 0]})
    (g, d) = model.configure_optimizers()
    assert g["optimizer"].param_groups[0]["betas"] == (0.0, 0.99)
    assert d["optimizer"].param_groups[0]["betas"] == (0.0, 0.0)


def test_clamp_output_is_in_range_with_straight_through_gradient():
    """output=clamp: D sees pixels in [-1, 1] like real ones (no out-of-range cue); pixels clamped
    at the bound still get the gradient that moves them back into range (a plain clamp would freeze
    them) but not one that pushes them further out (a plain straight-through lets them drift)."""
    from t2ilab.nets.gan_nets import Generator

    torch.manual_seed(0)
    g = Generator(channels=3, cond_dim=8, image_size=16, z_dim=8, base_channels=8, max_channels=16,
                  emb_dim=8, output="clamp")
    with torch.no_grad():
        g.out[-1].bias.fill_(3.0)  # push every pixel far above +1
    x = g(torch.randn(2, 8), torch.randn(2, 8))
    assert x.min() >= -1.0 and x.max() <= 1.0 and (x == 1.0).float().mean() > 0.9
    x.sum().backward()  # descent lowers every pixel: all pass
    assert (g.out[-1].bias.grad > 0).all()
    g.zero_grad()
    x = g(torch.randn(2, 8), torch.randn(2, 8))
    (-x).sum().backward()  # descent would raise pixels already above +1: blocked
    in_range = (x < 1.0).float().sum()
    assert g.out[-1].bias.grad.abs().sum() <= in_range + 1e-4
    with pytest.raises(ValueError, match="output"):
        Generator(cond_dim=8, image_size=16, output="sigmoid")


def test_cond_input_puts_the_caption_into_the_first_map():
    """cond_input=true: the smallest feature map (before any modulation) depends on the caption;
    without it, that map is a function of z alone."""
    from t2ilab.nets.gan_nets import Generator

    z, c1, c2 = torch.randn(2, 8), torch.randn(2, 8), torch.randn(2, 8)
    for cond_input in (False, True):
        torch.manual_seed(0)
        g = Generator(cond_dim=8, image_size=16, z_dim=8, base_channels=8, max_channels=16, emb_dim=8,
                      cond_input=cond_input)
        maps = []
        g.fc.register_forward_hook(lambda mod, inp, out: maps.append(out))
        g(z, c1), g(z, c2)
        assert torch.equal(maps[0], maps[1]) != cond_input


def test_mismatched_pairs_are_scored_from_the_real_features_as_a_separate_pass_would(make_model, fake_batch):
    """The projection D's caption enters only in its head, so (real, wrong caption) scores come from the reals'
    trunk features: the loss equals the three-pass computation [real, fake, real] it replaces."""
    model = make_model("gan", mismatch_weight=0.5, discriminator={"mbstd_group": 0}).eval()  # eval: SN fixed
    batch = fake_batch(seed=3)
    real, c = batch["image"], model.prepare_cond(batch["cond"])
    same = torch.zeros(len(c), len(c), dtype=torch.bool)  # every rolled pair is a mismatch
    torch.manual_seed(0)
    loss, stats = model.discriminator_loss(real, c, same)
    torch.manual_seed(0)
    with torch.no_grad():
        fake = model.generator(model.sample_z(len(c)), c)
        scores = model.discriminator(torch.cat([real, fake, real]), torch.cat([c, c, c.roll(1, 0)]))
    n = len(c)
    want = (d_real_loss("hinge", scores[:n]) + d_fake_loss("hinge", scores[n:2 * n])
            + 0.5 * d_fake_loss("hinge", scores[2 * n:], torch.ones(n, dtype=torch.bool)))
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stats["d_mismatch"], scores[2 * n:].mean(), rtol=1e-5, atol=1e-5)


def test_lazy_r1_weights_the_penalty_by_its_interval_and_runs_on_every_nth_d_update(make_model, fake_batch, fit,
                                                                                   monkeypatch):
    """gp_every = k: the penalty's gradient on its turn is k times the eager one (same in expectation over k
    updates), and the double backward runs only on every k-th discriminator update."""
    import t2ilab.models.gan as gan_module

    def d_grads(model, penalise):
        model.discriminator.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        loss, _ = model.discriminator_loss(real, c, same, penalise=penalise)
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.discriminator.parameters() if p.grad is not None])

    k = 4
    eager = make_model("gan", gp="r1", gp_weight=1.0, mismatch_weight=0.0, discriminator={"mbstd_group": 0}).eval()
    lazy = make_model("gan", gp="r1", gp_weight=1.0, gp_every=k, mismatch_weight=0.0,
                      discriminator={"mbstd_group": 0}).eval()
    lazy.load_state_dict(eager.state_dict())
    batch = fake_batch(seed=5)
    real, c = batch["image"], eager.prepare_cond(batch["cond"])
    same = torch.zeros(len(c), len(c), dtype=torch.bool)
    base = d_grads(eager, False)
    assert torch.equal(base, d_grads(lazy, False))  # off turns: the adversarial gradient alone
    penalty = d_grads(eager, True) - base
    assert penalty.abs().max() > 1e-6
    torch.testing.assert_close(d_grads(lazy, True) - base, k * penalty, rtol=1e-4, atol=1e-6)

    calls = []
    original = gan_module.gradient_penalty
    monkeypatch.setattr(gan_module, "gradient_penalty", lambda *a: calls.append(1) or original(*a))
    model = make_model("gan", gp="r1", gp_weight=1.0, gp_every=3, d_steps=2)
    fit(model, [fake_batch(seed=i) for i in range(3)])  # 6 D updates: the penalty on updates 0 and 3
    assert len(calls) == 2
