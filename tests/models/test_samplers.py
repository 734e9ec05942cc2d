"""Selectable diffusion samplers, SDEdit and the x0-guidance hook (models/samplers.py, models/diffusion.py).

Tiny 8 px diffusion models (conf/model/diffusion.yaml with the conftest's tiny UNet), perturbed so the
network's output depends on its inputs; every sampler through ``generate``, the sampler choice down to
the diffusers scheduler, the DDIM(eta=1) = DDPM identity step by step, SDEdit's limits (strength 1 =
``generate``, strength -> 0 = the input), x0 guidance pulling samples toward a target, and clear errors.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler)

from t2ilab.compat.diffusers import FiniteDDIMScheduler
from t2ilab.models import samplers
from t2ilab.models.samplers import SAMPLERS, build_scheduler, predicted_x0, shift_prediction

SIZE = 8
NAMES = list(SAMPLERS)


@pytest.fixture(params=["v_prediction", "epsilon"])
def model(request, make_model, perturb):
    m = make_model("diffusion", image_size=SIZE, prediction=request.param, ema={"enabled": False})
    perturb(m.net, 0.05)
    with torch.no_grad():
        m.null_embedding.normal_()
    return m.eval()


@pytest.fixture
def vmodel(make_model, perturb):
    m = make_model("diffusion", image_size=SIZE, prediction="v_prediction")
    perturb(m.ema.module, 0.05)
    with torch.no_grad():
        m.null_embedding.normal_()
    return m.eval()


def images01(n: int, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, SIZE, SIZE, generator=g)


# -- the samplers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("name", NAMES)
def test_every_sampler_gives_images_deterministic_per_sample(model, conds, generators, name, eta):
    cond = conds(3)
    opts = {"sampler": name, "num_steps": 5, "eta": eta, "guidance_scale": 2.0}
    a = model.generate(cond, generator=generators(3), **opts)
    assert a.shape == (3, 3, SIZE, SIZE) and a.dtype == torch.float32
    assert torch.isfinite(a).all() and a.min() >= 0 and a.max() <= 1
    assert a.std() > 1e-3  # not a constant image
    torch.testing.assert_close(model.generate(cond, generator=generators(3), **opts), a, atol=0, rtol=0)
    alone = model.generate(cond[1:2], generator=generators(1, seed=1), **opts)  # image 1 alone: same pixels
    torch.testing.assert_close(alone[0], a[1], atol=1e-5, rtol=0)


def test_samplers_differ_and_clip_x0_works_everywhere(vmodel, conds, generators):
    cond = conds(2)
    outs = {n: vmodel.generate(cond, generator=generators(2), sampler=n, num_steps=4) for n in NAMES}
    for i, a in enumerate(NAMES):
        for b in NAMES[i + 1:]:
            assert (outs[a] - outs[b]).abs().max() > 1e-4, f"{a} and {b} gave the same images"
    for n in NAMES:
        out = vmodel.generate(cond, generator=generators(2), sampler=n, num_steps=4, clip_x0=True, guidance_scale=5.0)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize(("name", "eta", "cls", "extra"), [
    ("ddim", 0.0, FiniteDDIMScheduler, {}),  # diffusers' DDIMScheduler, NaN-safe at eta > 0 (t2ilab.compat)
    ("dpm_solver++", 0.0, DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
    ("dpm_solver++", 1.0, DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++"}),
    ("euler", 0.0, EulerDiscreteScheduler, {}),
    ("euler", 0.5, EulerAncestralDiscreteScheduler, {}),
    ("ddpm", 0.0, DDPMScheduler, {}),
])
def test_sampler_choice_reaches_diffusers(vmodel, conds, generators, monkeypatch, name, eta, cls, extra):
    sched = vmodel.sampler(10, eta=eta, name=name)
    assert type(sched) is cls
    assert sched.config.timestep_spacing == "trailing" and int(sched.timesteps[0]) == 999
    assert sched.config.prediction_type == "v_prediction"
    assert sched.config.num_train_timesteps == 1000 and sched.config.beta_schedule == "squaredcos_cap_v2"
    for k, v in extra.items():
        assert sched.config[k] == v
    built = []
    real = samplers.build_scheduler

    def spy(*args, **kwargs):
        built.append(real(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr("t2ilab.models.diffusion.build_scheduler", spy)
    vmodel.generate(conds(1), generator=generators(1), sampler=name, eta=eta, num_steps=3)
    assert [type(s) for s in built] == [cls]


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("num_steps", [1000, 50])
def test_ddim_eta_1_is_the_ddpm_posterior_step(prediction, num_steps):
    """DDIM (Song et al. 2021, eq. 12) with sigma_t^2 = eta^2 (1 - a_prev)/(1 - a_t) (1 - a_t/a_prev)
    steps x_{t-1} = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma_t^2) eps + sigma_t z. At eta = 1, sigma_t^2
    is the variance beta~_t of the DDPM posterior q(x_{t-1} | x_t, x0) (Ho et al. 2020, eq. 7) and,
    with eps = (x_t - sqrt(a_t) x0) / sqrt(1 - a_t), the mean equals the posterior mean
    sqrt(a_prev) beta_t / (1 - a_t) x0 + sqrt(alpha_t) (1 - a_prev) / (1 - a_t) x_t (beta_t = 1 - a_t/a_prev,
    the effective beta of a strided step). So one step of each, for the same model output, x_t and
    noise z, agrees: checked with two noise draws (agreeing for two z fixes mean and standard deviation).
    The last step (t = 0) differs by convention: DDIM's ``set_alpha_to_one=False`` uses alpha_bar_0 as
    the "previous" level, DDPM uses 1, so it is left out."""
    config = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type=prediction,
                           clip_sample=False).config
    ddim = build_scheduler("ddim", config, num_steps, eta=1.0)
    ddpm = build_scheduler("ddpm", config, num_steps, eta=1.0)
    assert torch.equal(ddim.timesteps, ddpm.timesteps)
    for s in (ddim, ddpm):  # float64: near t = 0, 1 - a_t/a_prev ~ 1e-5 cancels badly in float32 (~1e-4 apart)
        s.alphas_cumprod, s.alphas, s.betas = s.alphas_cumprod.double(), s.alphas.double(), s.betas.double()
    ddim.final_alpha_cumprod = ddim.alphas_cumprod[0]
    g = torch.Generator().manual_seed(0)
    ts = ddim.timesteps
    for t in [ts[0], ts[1], ts[len(ts) // 2], ts[-3], ts[-2]]:
        x_t = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
        out = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
        for seed in (1, 2):
            a = ddim.step(out, t, x_t, eta=1.0, generator=torch.Generator().manual_seed(seed)).prev_sample
            b = ddpm.step(out, t, x_t, generator=torch.Generator().manual_seed(seed)).prev_sample
            assert a.dtype == b.dtype == torch.float64
            torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9, msg=f"t={int(t)} noise seed {seed}")


# -- limited-interval guidance ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ddim", "dpm_solver++", "euler"])
def test_guidance_interval_covering_every_step_is_cfg_and_an_empty_one_is_no_guidance(vmodel, conds, generators,
                                                                                    name):
    cond, opts = conds(3), {"sampler": name, "num_steps": 6, "guidance_scale": 3.0}
    cfg = vmodel.generate(cond, generator=generators(3), **opts)
    plain = vmodel.generate(cond, generator=generators(3), **{**opts, "guidance_scale": 1.0})
    assert (cfg - plain).abs().max() > 1e-3  # guidance changes these samples
    everywhere = vmodel.generate(cond, generator=generators(3), guidance_interval=[0.0, float("inf")], **opts)
    torch.testing.assert_close(everywhere, cfg, atol=0, rtol=0)
    nowhere = vmodel.generate(cond, generator=generators(3), guidance_interval=[2.0, 2.0], **opts)
    torch.testing.assert_close(nowhere, plain, atol=1e-6, rtol=0)
    middle = vmodel.generate(cond, generator=generators(3), guidance_interval=[0.3, 5.0], **opts)
    assert (middle - cfg).abs().max() > 1e-4 and (middle - plain).abs().max() > 1e-4


def test_guidance_interval_guides_exactly_the_steps_whose_sigma_lies_inside(vmodel, conds, generators):
    """Doubled (guided) network calls happen at the steps with sigma in (lo, hi], single calls elsewhere."""
    n, lo, hi = 2, 0.3, 5.0
    sched = vmodel.sampler(8, name="ddim")
    alphas = vmodel.noise_scheduler.alphas_cumprod
    sigmas = [samplers.noise_level(float(alphas[int(t)])) for t in sched.timesteps]
    want = [2 * n if lo < s <= hi else n for s in sigmas]
    assert n in want and 2 * n in want  # the interval splits these 8 steps
    batch_sizes = []
    hook = vmodel.ema.module.register_forward_hook(lambda mod, args, out: batch_sizes.append(args[0].shape[0]))
    try:
        vmodel.generate(conds(n), generator=generators(n), sampler="ddim", num_steps=8, guidance_scale=2.0,
                        guidance_interval=[lo, hi])
    finally:
        hook.remove()
    assert batch_sizes == want


@pytest.mark.parametrize("bad", [[5.0, 1.0], [-1.0, 2.0], [1.0], "abc", [True, 2.0]])
def test_a_bad_guidance_interval_is_a_clear_error(vmodel, conds, make_model, bad):
    with pytest.raises(ValueError, match=r"sampling.guidance_interval=.* must be \[lo, hi\] noise levels"):
        vmodel.generate(conds(1), guidance_interval=bad, num_steps=2)
    with pytest.raises(Exception, match=r"sampling.guidance_interval="):
        make_model("diffusion", image_size=SIZE, sampling={"guidance_interval": bad})


def test_the_pre_launch_check_refuses_a_reversed_interval_and_accepts_inf():
    from hydra import compose, initialize_config_dir

    from t2ilab.utils.config import CONF_DIR
    from t2ilab.utils.schema import validate

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        validate(compose("train", overrides=["model=diffusion", "model.sampling.guidance_interval=[0,inf]"]))
        cfg = compose("train", overrides=["model=diffusion", "model.sampling.guidance_interval=[5,1]"])
    with pytest.raises(ValueError, match=r"model.sampling.guidance_interval=\[5, 1\] must be \[lo, hi\] noise levels "
                                         r"sigma with 0 <= lo <= hi .*e.g. model.sampling.guidance_interval=\[0.3,5.0\]"):
        validate(cfg)


# -- autoguidance ----------------------------------------------------------------------------------
@pytest.fixture
def checkpoints(make_model, perturb, fake_batch, fit, tmp_path):
    """``save(name, seed=0, **model overrides)``: a real checkpoint of a perturbed 8 px diffusion model."""

    def save(name: str, seed: int = 0, **overrides):
        m = make_model("diffusion", image_size=SIZE, prediction=overrides.pop("prediction", "v_prediction"),
                       seed=seed, **overrides)
        perturb(m.net, 0.05, seed=seed)
        trainer = fit(m, [fake_batch(image_size=SIZE)], max_steps=1)
        path = tmp_path / f"{name}.ckpt"
        trainer.save_checkpoint(path)
        return str(path)

    return save


def test_autoguidance_with_the_model_itself_as_guide_is_no_guidance(checkpoints, conds, generators):
    from t2ilab.models.checkpoint import load_model

    main, weak = checkpoints("main"), checkpoints("weak", seed=1)
    model = load_model(main)[0]
    cond, opts = conds(3), {"sampler": "ddim", "num_steps": 5, "guidance_scale": 3.0}
    plain = model.generate(cond, generator=generators(3), **{**opts, "guidance_scale": 1.0})
    cfg = model.generate(cond, generator=generators(3), **opts)
    itself = model.generate(cond, generator=generators(3), guide="autoguidance", guide_ckpt=main, **opts)
    torch.testing.assert_close(itself, plain, atol=1e-6, rtol=0)
    guided = model.generate(cond, generator=generators(3), guide="autoguidance", guide_ckpt=weak, **opts)
    assert (guided - plain).abs().max() > 1e-3 and (guided - cfg).abs().max() > 1e-3
    # w = 1 ignores the guide; the guide is loaded once and never becomes part of the model's state
    torch.testing.assert_close(model.generate(cond, generator=generators(3), guide="autoguidance", guide_ckpt=weak,
                                              **{**opts, "guidance_scale": 1.0}), plain, atol=0, rtol=0)
    assert set(model._guides) == {main, weak} and not any("guide" in k for k in model.state_dict())
    # limited interval applies to autoguidance too: an empty one is no guidance
    torch.testing.assert_close(model.generate(cond, generator=generators(3), guide="autoguidance", guide_ckpt=weak,
                                              guidance_interval=[1.0, 1.0], **opts), plain, atol=1e-6, rtol=0)


def test_autoguidance_errors_name_the_fix(checkpoints, conds, make_model, tmp_path):
    from t2ilab.models.checkpoint import load_model

    model = load_model(checkpoints("main"))[0]
    with pytest.raises(ValueError, match="sampling.guide=autoguidance needs sampling.guide_ckpt="):
        model.generate(conds(1), guide="autoguidance", num_steps=2)
    with pytest.raises(ValueError, match="sampling.guide_ckpt=.*is not a file"):
        model.generate(conds(1), guide="autoguidance", guide_ckpt=str(tmp_path / "nope.ckpt"), num_steps=2)
    other = checkpoints("eps", prediction="epsilon")
    with pytest.raises(ValueError, match="cannot guide this model: it was trained with another prediction type"):
        model.generate(conds(1), guide="autoguidance", guide_ckpt=other, num_steps=2)
    with pytest.raises(ValueError, match=r"sampling.guide='weak' is not a guide; choose one of \['cfg', 'autoguidance'\]"):
        model.generate(conds(1), guide="weak", num_steps=2)
    with pytest.raises(Exception, match="sampling.guide=autoguidance needs sampling.guide_ckpt"):
        make_model("diffusion", image_size=SIZE, sampling={"guide": "autoguidance"})
    # sample / eval check it (and load the guide) before any sample is drawn, under their own key
    from t2ilab.utils.schema import check_sampling

    check_sampling({"guide": "autoguidance", "guide_ckpt": checkpoints("weak", seed=1)}, model)
    with pytest.raises(ValueError, match=r"stopped before any sample was drawn:\n  metrics.sampling.guide_ckpt=.*cannot "
                                         r"guide this model"):
        check_sampling({"guide": "autoguidance", "guide_ckpt": other}, model, "metrics.sampling")


# -- errors ---------------------------------------------------------------------------------------
def test_unknown_sampler_is_a_clear_error_in_module_and_schema(vmodel, make_model, conds):
    from hydra import compose, initialize_config_dir

    from t2ilab.utils.config import CONF_DIR
    from t2ilab.utils.schema import validate

    choices = "'ddim', 'dpm_solver++', 'euler', 'ddpm'"
    with pytest.raises(ValueError, match=f"sampling.sampler='heun'.*{choices.replace('+', '[+]')}"):
        vmodel.generate(conds(1), sampler="heun")
    with pytest.raises(Exception, match="sampling.sampler='heun'.*ddim"):  # wrapped by hydra.instantiate
        make_model("diffusion", image_size=SIZE, sampling={"sampler": "heun"})
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["model=latent_diffusion", "model.sampling.sampler=heun"])
        validate(compose("train", overrides=["model=diffusion", "model.sampling.sampler=dpm_solver++"]))
    with pytest.raises(ValueError, match=r"model.sampling.sampler='heun' \(str\) must be one of ddim, dpm_solver\+\+, "
                                         r"euler, ddpm"):
        validate(cfg)


# -- SDEdit ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ddim", "dpm_solver++", "euler"])
def test_edit_at_strength_1_ignores_the_input_and_is_generate(vmodel, conds, generators, name):
    cond = conds(2)
    opts = {"sampler": name, "num_steps": 5}
    want = vmodel.generate(cond, generator=generators(2), **opts)
    for seed in (3, 4):
        got = vmodel.edit(images01(2, seed), cond, strength=1.0, generator=generators(2), **opts)
        torch.testing.assert_close(got, want, atol=0, rtol=0)


@pytest.mark.parametrize("name", ["ddim", "euler"])
def test_edit_at_small_strength_returns_the_input(model, conds, generators, name):
    x = images01(3)
    out = model.edit(x, conds(3), strength=0.02, generator=generators(3), sampler=name, num_steps=50)
    assert out.shape == x.shape
    assert (out - x).abs().mean() < 0.05
    # and more strength = further from the input
    far = model.edit(x, conds(3), strength=0.6, generator=generators(3), sampler=name, num_steps=50)
    assert (far - x).abs().mean() > (out - x).abs().mean()


def test_edit_is_deterministic_per_sample_and_source_cond_is_the_unconditional_branch(vmodel, conds, generators):
    x, cond = images01(3), conds(3)
    a = vmodel.edit(x, cond, strength=0.5, generator=generators(3), num_steps=6, eta=1.0)
    alone = vmodel.edit(x[2:], cond[2:], strength=0.5, generator=generators(1, seed=2), num_steps=6, eta=1.0)
    torch.testing.assert_close(alone[0], a[2], atol=1e-5, rtol=0)
    src = conds(3, seed=9)
    b = vmodel.edit(x, cond, strength=0.5, generator=generators(3), num_steps=6, eta=1.0, source_cond=src)
    assert (a - b).abs().max() > 1e-4
    # at guidance 1 the unconditional branch is not evaluated: source_cond has no effect
    c1 = vmodel.edit(x, cond, strength=0.5, generator=generators(3), num_steps=6, guidance_scale=1.0)
    c2 = vmodel.edit(x, cond, strength=0.5, generator=generators(3), num_steps=6, guidance_scale=1.0, source_cond=src)
    torch.testing.assert_close(c1, c2, atol=0, rtol=0)


@pytest.mark.parametrize("strength", [0.0, -0.1, 1.5, float("nan"), True, "0.5"])
def test_edit_strength_outside_0_1_is_refused(vmodel, conds, strength):
    with pytest.raises(ValueError, match="strength"):
        vmodel.edit(images01(1), conds(1), strength=strength)


def test_edit_refuses_wrong_shapes_and_options(vmodel, conds):
    with pytest.raises(ValueError, match="images must be"):
        vmodel.edit(images01(2), conds(1), strength=0.5)
    with pytest.raises(TypeError, match="unknown options"):
        vmodel.edit(images01(1), conds(1), strength=0.5, steps=3)


# -- x0 guidance ----------------------------------------------------------------------------------
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_shift_prediction_moves_the_predicted_x0_by_grad(prediction):
    g = torch.Generator().manual_seed(0)
    out, x_t, grad = (torch.randn(2, 3, 4, 4, generator=g) for _ in range(3))
    for a in (0.02, 0.5, 0.98):
        x0 = predicted_x0(out, x_t, prediction, a)
        moved = shift_prediction(out, x_t, prediction, a, guidance=lambda x, t: grad)
        torch.testing.assert_close(predicted_x0(moved, x_t, prediction, a), x0 + grad, atol=1e-5, rtol=1e-5)
        clipped = shift_prediction(out, x_t, prediction, a, clip=True, guidance=lambda x, t: grad)
        torch.testing.assert_close(predicted_x0(clipped, x_t, prediction, a), (x0 + grad).clamp(-1, 1),
                                   atol=1e-5, rtol=1e-5)


def pull_toward(target: torch.Tensor, scale: float, calls: list):
    """grad = scale * (target - x0), computed with autograd (the hook runs inside generate's no_grad)."""

    def fn(x0: torch.Tensor, t: int) -> torch.Tensor:
        calls.append((tuple(x0.shape), t, x0.requires_grad))
        with torch.enable_grad():
            x = x0.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(-0.5 * (x - target).square().sum(), x)
        return scale * g

    return fn


@pytest.mark.parametrize("name", ["ddim", "dpm_solver++", "euler"])
def test_x0_guidance_pulls_samples_toward_a_target(model, conds, generators, name):
    """grad = s (target - x0): s = 1 replaces the predicted x0 by the target at every step, so the
    samples end at the target (whatever the untrained net predicts: a check of the shift's constant for
    epsilon and v); s = 0.5 (v-prediction: the perturbed epsilon net's x0 diverges to ~1e3) still ends
    strictly closer than without guidance."""
    cond = conds(2)
    target = torch.full((2, 3, SIZE, SIZE), 0.6).index_fill_(1, torch.tensor([0]), -0.8)  # a constant colour, [-1,1]
    want = (target + 1) / 2
    opts = {"sampler": name, "num_steps": 6}
    plain = model.generate(cond, generator=generators(2), **opts)
    d_plain = (plain - want).abs().mean()
    calls: list = []
    with model.guided_by(pull_toward(target, 1.0, calls)) as m:
        assert m is model and model._x0_guidance is not None
        pinned = model.generate(cond, generator=generators(2), **opts)
    assert model._x0_guidance is None  # restored
    assert (pinned - want).abs().max() < 0.02 < d_plain
    sched_ts = [int(round(float(t))) for t in model.sampler(6, name=name).timesteps]
    assert [c[1] for c in calls] == sched_ts  # once per step, with the training timestep
    assert all(c[0] == (2, 3, SIZE, SIZE) and not c[2] for c in calls)
    if model.prediction == "v_prediction":
        with model.guided_by(pull_toward(target, 0.5, [])):
            half = model.generate(cond, generator=generators(2), **opts)
        assert (half - want).abs().mean() < d_plain, f"{name}: s=0.5 not closer to the target than unguided"
    # edit calls the hook too (on the truncated steps only)
    calls.clear()
    with model.guided_by(pull_toward(target, 1.0, calls)):
        edited = model.edit(images01(2), cond, strength=0.5, generator=generators(2), **opts)
    assert len(calls) == 3
    plain_edit = model.edit(images01(2), cond, strength=0.5, generator=generators(2), **opts)
    assert (edited - want).abs().mean() < (plain_edit - want).abs().mean()


def test_guided_by_restores_on_error_and_never_registers_a_module(vmodel, conds):
    fn = torch.nn.Identity()  # a module as guidance function: must not become a submodule / state-dict entry
    keys = set(vmodel.state_dict())
    def boom(x0, t):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with vmodel.guided_by(boom):
            vmodel.generate(conds(1), num_steps=2)
    assert vmodel._x0_guidance is None
    with vmodel.guided_by(lambda x0, t: None):  # None = no shift: same images
        with vmodel.guided_by(fn):
            assert vmodel._x0_guidance is fn and set(vmodel.state_dict()) == keys
        assert vmodel._x0_guidance is not fn
    assert vmodel._x0_guidance is None


# -- latent diffusion ----------------------------------------------------------------------------
def test_latent_diffusion_edit_and_differentiable_decode(make_model, fake_batch, fit, tmp_path, conds, generators):
    spatial = {"prior": "standard", "recon": "mse", "beta": 1e-3, "kl_warmup_steps": 0, "lr_warmup_steps": 0,
               "net": {"latent": "spatial", "latent_channels": 4, "downsample": 4}}
    ae = make_model("vae", **spatial)
    fit(ae, [fake_batch(seed=0)], max_steps=1).save_checkpoint(tmp_path / "ae.ckpt")
    ldm = make_model("diffusion", 16, 3, **{"_target_": "t2ilab.models.latent_diffusion.LatentDiffusionModule",
                                            "autoencoder_ckpt": str(tmp_path / "ae.ckpt")}).eval()
    cond, x = conds(2), torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    full = ldm.edit(x, cond, strength=1.0, generator=generators(2), num_steps=3)
    torch.testing.assert_close(full, ldm.generate(cond, generator=generators(2), num_steps=3), atol=0, rtol=0)
    out = ldm.edit(x, cond, strength=0.5, generator=generators(2), num_steps=4, sampler="euler")
    assert out.shape == (2, 3, 16, 16) and torch.isfinite(out).all()
    z = torch.randn(2, *ldm.sample_shape, requires_grad=True)
    ldm.x0_to_images(z).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    torch.testing.assert_close(ldm.x0_to_images(z.detach()), ldm.decode_latents(z.detach()))
