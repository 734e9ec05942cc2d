"""Samplers of the diffusion families (``model.sampling.sampler``) and the one denoising loop that
``DiffusionModule.generate`` and ``DiffusionModule.edit`` (SDEdit) share.

Every sampler is a diffusers scheduler built from the model's training ``DDPMScheduler`` config (same
betas, same ``prediction_type``), with ``timestep_spacing="trailing"`` (the first step starts at the
last training timestep, the final noise level, even with few steps):

==============  ========================================================================================
``ddim``        ``DDIMScheduler`` (Song et al. 2021). ``eta`` = 0 deterministic; ``eta`` = 1 is the
                DDPM posterior (see tests/models/test_samplers.py). ``clip_x0`` is applied by diffusers
                (``clip_sample`` + ``use_clipped_model_output``: the recomputed noise keeps the pair consistent).
``dpm_solver++``  ``DPMSolverMultistepScheduler`` (Lu et al. 2022), 2nd-order multistep in data (x0) space:
                good images at 10-25 steps. ``eta`` > 0 selects ``sde-dpmsolver++`` (its noise amount is
                fixed: any eta > 0 behaves like eta = 1).
``euler``       ``EulerDiscreteScheduler`` (Karras et al. 2022, the sigma-space ODE). It works on
                x_sigma = x_t / sqrt(alpha_bar) (initial noise scaled by ``init_noise_sigma``; the network
                sees ``scale_model_input`` = x_t). ``eta`` > 0 selects ``EulerAncestralDiscreteScheduler``
                (full ancestral noise, like DDIM's eta = 1; the amount is not graded by eta).
``ddpm``        ``DDPMScheduler`` ancestral sampling (Ho et al. 2020), strided when ``num_steps`` < T;
                always stochastic, ``eta`` is ignored.
==============  ========================================================================================

The loop calls ``scale_model_input`` for every scheduler (a no-op for DDIM, DDPM and DPM-Solver),
feeds the network the VP input x_t, combines the guided prediction, optionally edits the prediction
in x0 space (``clip_x0`` for schedulers that do not clip themselves, and the x0-guidance hook of
``DiffusionModule.guided_by``; see :func:`shift_prediction`), then calls ``step``. Per-step noise
comes from the per-sample generators: drawn by ``model.randn`` when the scheduler accepts
``variance_noise`` (DDIM, DPM-Solver; only for ``eta`` > 0), else diffusers draws it from the same
generators (a list of generators is drawn per sample by ``diffusers.utils.torch_utils.randn_tensor``).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any, Callable

import torch
from diffusers import (DDPMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from t2ilab.choices import GUIDES, SAMPLER_NAMES
from t2ilab.compat.diffusers import FiniteDDIMScheduler
from t2ilab.models.generation import step_done
from t2ilab.models.options import interval_problem

X0Guidance = Callable[[torch.Tensor, int], "torch.Tensor | None"]
WeakBranch = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, timesteps) -> the guide's output


@dataclasses.dataclass(frozen=True)
class Sampler:
    """One row of :data:`SAMPLERS`.

    Attributes:
        build: ``(training scheduler config, eta, clip_x0) -> scheduler`` (timesteps not set yet).
        clips_x0: the scheduler applies ``clip_x0`` itself, consistently; otherwise the loop clamps the
            predicted x0 and re-derives the model output from it.
    """

    build: Callable[[Any, float, bool], SchedulerMixin]
    clips_x0: bool = False


def _ddim(config: Any, eta: float, clip_x0: bool) -> SchedulerMixin:
    return FiniteDDIMScheduler.from_config(config, timestep_spacing="trailing", clip_sample=bool(clip_x0),
                                     thresholding=False, set_alpha_to_one=False)


def _dpm_solver(config: Any, eta: float, clip_x0: bool) -> SchedulerMixin:
    return DPMSolverMultistepScheduler.from_config(
        config, algorithm_type="sde-dpmsolver++" if eta > 0 else "dpmsolver++", solver_order=2,
        timestep_spacing="trailing", thresholding=False)


def _euler(config: Any, eta: float, clip_x0: bool) -> SchedulerMixin:
    cls = EulerAncestralDiscreteScheduler if eta > 0 else EulerDiscreteScheduler
    return cls.from_config(config, timestep_spacing="trailing")


def _ddpm(config: Any, eta: float, clip_x0: bool) -> SchedulerMixin:
    return DDPMScheduler.from_config(config, timestep_spacing="trailing", clip_sample=False, thresholding=False)


SAMPLERS: dict[str, Sampler] = {
    "ddim": Sampler(_ddim, clips_x0=True),
    "dpm_solver++": Sampler(_dpm_solver),
    "euler": Sampler(_euler),
    "ddpm": Sampler(_ddpm),
}


assert tuple(SAMPLERS) == SAMPLER_NAMES, "t2ilab.choices.SAMPLER_NAMES must list this table's keys"


def get_sampler(name: str) -> Sampler:
    """The table row of ``name``; a ValueError listing the choices otherwise."""
    if name not in SAMPLERS:
        raise ValueError(f"sampling.sampler={name!r} is not a sampler; choose one of {list(SAMPLERS)}")
    return SAMPLERS[name]


def build_scheduler(name: str, train_config: Any, num_steps: int, *, eta: float = 0.0, clip_x0: bool = False,
                    device: torch.device | str | None = None) -> SchedulerMixin:
    """Scheduler ``name`` over the training schedule ``train_config``, timesteps set for ``num_steps``."""
    if int(num_steps) < 1:
        raise ValueError(f"sampling.num_steps={num_steps} must be >= 1")
    s = get_sampler(name).build(train_config, float(eta), bool(clip_x0))
    if s.config.prediction_type != train_config.prediction_type:  # pragma: no cover
        raise RuntimeError("sampling and training schedulers disagree on prediction_type")
    s.set_timesteps(int(num_steps), device=device)
    return s


def truncate(sched: SchedulerMixin, strength: float) -> torch.Tensor:
    """SDEdit / img2img: the last ``ceil(strength * num_steps)`` timesteps (as diffusers' img2img
    ``get_timesteps``); tells step-indexed schedulers (Euler, DPM-Solver) where they begin."""
    n = len(sched.timesteps) // sched.order
    k = min(n, max(1, math.ceil(strength * n - 1e-9)))
    start = (n - k) * sched.order
    if hasattr(sched, "set_begin_index"):
        sched.set_begin_index(start)
    return sched.timesteps[start:]


def noised_and_target(x0: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor,
                      prediction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Training pair of a VP diffusion: x_t = sqrt(a) x0 + sqrt(1-a) noise (= ``scheduler.add_noise``, without its
    dtype round-trips) and the regression target (``epsilon``: the noise; ``v_prediction``: sqrt(a) noise -
    sqrt(1-a) x0). ``alpha_bar`` broadcasts against ``x0``. Used by the diffusion family and the VAE's latent prior."""
    x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise
    target = noise if prediction == "epsilon" else alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0
    return x_t, target


def x0_shift_factor(prediction: str, alpha_bar: float) -> float:
    """c such that moving the predicted x0 by d moves the model output by -c d (see shift_prediction)."""
    if prediction == "epsilon":
        return math.sqrt(alpha_bar) / math.sqrt(1.0 - alpha_bar)
    if prediction == "v_prediction":
        return 1.0 / math.sqrt(1.0 - alpha_bar)
    raise ValueError(f"unsupported prediction_type {prediction!r}")


def predicted_x0(out: torch.Tensor, x_t: torch.Tensor, prediction: str, alpha_bar: float) -> torch.Tensor:
    """x0 implied by model output ``out`` at the VP input x_t = sqrt(a) x0 + sqrt(1-a) eps."""
    a, s = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
    if prediction == "epsilon":
        return (x_t - s * out) / a
    return a * x_t - s * out  # v = a eps - s x0, x_t = a x0 + s eps  =>  x0 = a x_t - s v


def shift_prediction(out: torch.Tensor, x_t: torch.Tensor, prediction: str, alpha_bar: float, *,
                     clip: bool = False, guidance: X0Guidance | None = None, t: int = 0) -> torch.Tensor:
    """The model output whose predicted x0 is ``x0 + grad`` (x0-guidance), clamped to [-1, 1] (``clip``).

    With x_t = sqrt(a) x0 + sqrt(1-a) eps (a = alpha_bar_t, x_t the VP input the network saw):

    * epsilon: x0 = (x_t - sqrt(1-a) eps) / sqrt(a), so at fixed x_t, dx0 = -sqrt(1-a)/sqrt(a) deps,
      i.e. eps' = eps - sqrt(a)/sqrt(1-a) (x0' - x0);
    * v = sqrt(a) eps - sqrt(1-a) x0: x0 = sqrt(a) x_t - sqrt(1-a) v, so v' = v - (x0' - x0) / sqrt(1-a).

    The returned output is an ordinary (x0', eps') pair at x_t: every scheduler derives x0 and the
    noise from it with the same relations (Euler in sigma space: x_sigma = x_t / sqrt(a),
    sigma = sqrt((1-a)/a) gives the same x0), so the step moves towards x0' and stays consistent.
    ``guidance(x0, t)`` gets the (detached) predicted x0 after classifier-free guidance, in the
    model's sample space (latents for latent diffusion), and the training timestep t; it returns the
    x0 displacement (already scaled; ``None`` = none). Clamping happens after the displacement.
    """
    x0 = predicted_x0(out, x_t, prediction, alpha_bar)
    new = x0
    if guidance is not None:
        grad = guidance(x0.detach(), t)
        if grad is not None:
            new = new + grad.detach().to(device=x0.device, dtype=x0.dtype)
    if clip:
        new = new.clamp(-1.0, 1.0)
    return out - x0_shift_factor(prediction, alpha_bar) * (new - x0)


def noise_level(alpha_bar: float) -> float:
    """sigma = sqrt((1 - a) / a) of the VP noise level a = alpha_bar (the EDM / Euler sigma)."""
    return math.sqrt(max(1.0 - alpha_bar, 0.0) / max(alpha_bar, 1e-20))


def check_interval(interval: Any) -> tuple[float, float] | None:
    """``sampling.guidance_interval`` as ``(lo, hi)``, or None (guide at every step).

    Limited-interval guidance (Kynkäänniemi et al., NeurIPS 2024): classifier-free guidance only at
    the steps whose noise level sigma (:func:`noise_level`) lies in ``(lo, hi]``; elsewhere the
    conditional prediction alone (one network call instead of two). ``[0, inf]`` (``.inf`` in YAML)
    is plain CFG, ``lo == hi`` guides nowhere."""
    if interval is None:
        return None
    if (why := interval_problem(interval)) is not None:
        raise ValueError(f"sampling.guidance_interval={interval!r} {why}, e.g. [0.3, 5.0]")
    lo, hi = (float(v) for v in interval)
    return lo, hi


def check_guide(guide: Any, guide_ckpt: Any) -> None:
    """``sampling.guide`` is ``cfg`` or ``autoguidance``, and autoguidance names its guide checkpoint."""
    if guide not in GUIDES:
        raise ValueError(f"sampling.guide={guide!r} is not a guide; choose one of {list(GUIDES)}")
    if guide == "autoguidance" and not guide_ckpt:
        raise ValueError("sampling.guide=autoguidance needs sampling.guide_ckpt=<a checkpoint of a weaker model of "
                         "the same kind>, e.g. an earlier <run>/checkpoints/step=0001000.ckpt of the same run")


def initial_noise(sched: SchedulerMixin, noise: torch.Tensor) -> torch.Tensor:
    """Pure noise in the scheduler's sample space (Euler: sigma space, std ``init_noise_sigma``)."""
    sigma = float(sched.init_noise_sigma)
    return noise if sigma == 1.0 else noise * sigma


def denoise(model: Any, net: torch.nn.Module, sched: SchedulerMixin, x: torch.Tensor, timesteps: torch.Tensor,
            cond: torch.Tensor, uncond: torch.Tensor, generator: Any, *, sampler: str = "ddim",
            guidance_scale: float = 2.0, eta: float = 0.0, clip_x0: bool = False,
            guidance_interval: Any = None, weak: WeakBranch | None = None, progress: bool = True) -> torch.Tensor:
    """Run ``sched`` over ``timesteps`` from ``x`` (its sample space); returns the final sample.
    ``progress``: report each step to the generation progress bar (off for an inner loop, e.g. the VAE's
    latent prior, whose family counts batches).

    Classifier-free guidance: out = out_u + w (out_c - out_u), with ``uncond`` as the unconditional
    branch (the learned null condition; SDEdit's ``source_cond`` for "guidance toward the difference"),
    at the steps whose noise level lies in ``guidance_interval`` (:func:`check_interval`; None = all).
    Autoguidance (Karras et al., NeurIPS 2024): ``weak(x_t, t)`` — a weaker model's conditional output —
    replaces out_u, so w = 1 is no guidance and a guide identical to the model changes nothing.
    ``model`` supplies ``prediction``, ``noise_scheduler.alphas_cumprod``, ``randn``, ``device`` and
    ``_x0_guidance`` (the hook of ``DiffusionModule.guided_by``).
    """
    interval = check_interval(guidance_interval)
    both = torch.cat([cond, uncond]) if guidance_scale != 1.0 else cond
    params = inspect.signature(sched.step).parameters
    hook = getattr(model, "_x0_guidance", None)
    clip_here = bool(clip_x0) and not get_sampler(sampler).clips_x0
    alphas = model.noise_scheduler.alphas_cumprod
    for t in timesteps:
        step_t = int(round(float(t)))
        sigma = noise_level(float(alphas[step_t]))
        guided = guidance_scale != 1.0 and (interval is None or interval[0] < sigma <= interval[1])
        x_t = sched.scale_model_input(x, t)  # the VP input x_t (Euler: x_sigma / sqrt(sigma^2 + 1))
        if guided and weak is not None:
            c = net(x_t, t.expand(x_t.shape[0]).to(model.device), cond).float()
            out = (u := weak(x_t, t.expand(x_t.shape[0]).to(model.device)).float()) + guidance_scale * (c - u)
        else:
            x_in = torch.cat([x_t, x_t]) if guided else x_t
            out = net(x_in, t.expand(x_in.shape[0]).to(model.device), both if guided else cond).float()
            if guided:
                c, u = out.chunk(2)
                out = u + guidance_scale * (c - u)
        if hook is not None or clip_here:
            out = shift_prediction(out, x_t, model.prediction, float(alphas[step_t]), clip=clip_here,
                                   guidance=hook, t=step_t)
        kw: dict[str, Any] = {}
        if "eta" in params:
            kw["eta"] = eta
        if "use_clipped_model_output" in params:
            kw["use_clipped_model_output"] = bool(clip_x0)
        if "variance_noise" in params:
            kw["variance_noise"] = model.randn(x.shape, generator) if eta > 0 else None
        elif "generator" in params:
            kw["generator"] = list(generator) if isinstance(generator, (list, tuple)) else generator
        x = sched.step(out, t, x, **kw).prev_sample
        if progress:
            step_done()
    return x
