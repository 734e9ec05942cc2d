"""Post-processing of EXPORTED images: a configured chain of steps (upscale, sharpen, denoise)
applied to the PNGs (and grid) that ``t2ilab.sample`` writes — never to what is evaluated.

Why only on export: every metric (FID, CLIP score, prompt accuracy) must measure what the model
generates. A sharpening or upscaling pass changes those numbers (usually FID gets worse and
classifier accuracy moves), so ``t2ilab.eval`` and the training callback never post-process;
the chain that touched a sample folder is written into its ``prompts.jsonl`` (``sampling.postprocess``)
so an exported folder is never mistaken for raw model output.

Config (``conf/postprocess/*.yaml``; ``postprocess=none|sharpen|upscale|denoise``)::

    postprocess:
      steps:                       # applied in this order; [] = off (images bit-identical)
        - {kind: denoise, method: median, kernel_size: 3}
        - {kind: upscale, factor: 4}
        - {kind: sharpen, amount: 0.6, sigma: 1.0}

Steps work on float images (N,C,H,W) in [0,1] on any device and return the same, clamped to
[0,1]; C in {1,3}. Only torchvision is used (kornia is not a dependency; torchvision's
``gaussian_blur`` gives the same unsharp mask). ``upscale`` with ``model: PATH`` runs a real
super-resolution network instead of interpolation — the hook for SR weights you bring (none ship
with the project): a ``torch.export`` program (``.pt2``, ``torch.export.save``; export it with a
dynamic batch dimension) or a TorchScript file (other suffixes, ``torch.jit.save``; deprecated by
torch) mapping [0,1] images (N,C,H,W) to [0,1] images (N,C,sH,sW).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

# kind -> default options (every option a step accepts; unknown keys are an error)
DEFAULTS: dict[str, dict[str, Any]] = {
    "upscale": {"factor": 2, "size": None, "mode": "bicubic", "model": None},
    "sharpen": {"amount": 0.5, "sigma": 1.0, "kernel_size": 5},
    "denoise": {"method": "gaussian", "kernel_size": 3, "sigma": 0.8},
}
MODES = ("bicubic", "bilinear", "nearest")  # torchvision InterpolationMode names (imported lazily: every
# sample export imports this module, and torchvision.transforms.v2 costs ~0.1 s to import)


def upscale(x: torch.Tensor, factor: float = 2, size: int | None = None, mode: str = "bicubic",
            model: str | None = None) -> torch.Tensor:
    """Antialiased resize to ``size`` (side length) or ``factor`` x; or a TorchScript SR ``model``.

    Args:
        x: float images (N,C,H,W) in [0,1].
        factor: scale factor (ignored when ``size`` is set).
        size: output side length in pixels.
        mode: bicubic | bilinear | nearest (interpolation only).
        model: path of a super-resolution network (``.pt2`` torch.export program or TorchScript;
            [0,1] in, [0,1] out).
    """
    if model:
        net = _sr_model(str(model), x.device)
        with torch.no_grad():
            return net(x).float().clamp(0, 1)
    h, w = x.shape[-2:]
    out = [int(size), int(size)] if size else [round(h * float(factor)), round(w * float(factor))]
    if out == [h, w]:
        return x
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2.functional import resize

    return resize(x, out, interpolation=InterpolationMode(mode), antialias=True).clamp(0, 1)


_SR_CACHE: dict[tuple[str, str], torch.nn.Module] = {}


def _sr_model(path: str, device: torch.device) -> torch.nn.Module:
    key = (path, str(device))
    if key not in _SR_CACHE:
        if not Path(path).expanduser().is_file():
            raise FileNotFoundError(f"postprocess upscale model={path} does not exist (a super-resolution network: "
                                    "torch.export.save .pt2 or TorchScript)")
        file = str(Path(path).expanduser())
        if file.endswith(".pt2"):
            _SR_CACHE[key] = torch.export.load(file).module().to(device)
        else:
            _SR_CACHE[key] = torch.jit.load(file, map_location=device).eval()
    return _SR_CACHE[key]


def _blur(x: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    from torchvision.transforms.v2.functional import gaussian_blur

    return gaussian_blur(x, [int(kernel_size)] * 2, [float(sigma)] * 2)


def sharpen(x: torch.Tensor, amount: float = 0.5, sigma: float = 1.0, kernel_size: int = 5) -> torch.Tensor:
    """Unsharp mask: ``x + amount * (x - gaussian_blur(x))``, clamped to [0,1].

    Args:
        x: float images (N,C,H,W) in [0,1].
        amount: strength (0 = unchanged).
        sigma: blur standard deviation in pixels (the scale of the edges that are boosted).
        kernel_size: odd blur kernel size.
    """
    return (x + float(amount) * (x - _blur(x, kernel_size, sigma))).clamp(0, 1)


def denoise(x: torch.Tensor, method: str = "gaussian", kernel_size: int = 3, sigma: float = 0.8) -> torch.Tensor:
    """Gaussian blur or median filter (reflect-padded, same size).

    Args:
        x: float images (N,C,H,W) in [0,1].
        method: ``gaussian`` (smooths grain) or ``median`` (removes salt-and-pepper speckles, keeps edges).
        kernel_size: odd window size.
        sigma: Gaussian standard deviation (gaussian only).
    """
    if method == "gaussian":
        return _blur(x, kernel_size, sigma).clamp(0, 1)
    k = int(kernel_size)
    n, c, h, w = x.shape
    padded = F.pad(x, [k // 2] * 4, mode="reflect")
    windows = F.unfold(padded.reshape(n * c, 1, h + k - 1, w + k - 1), k)  # (n*c, k*k, h*w)
    return windows.median(dim=1).values.reshape(n, c, h, w)


STEPS: dict[str, Callable[..., torch.Tensor]] = {"upscale": upscale, "sharpen": sharpen, "denoise": denoise}


def _check(kind: str, opts: dict[str, Any], where: str) -> None:
    if kind == "denoise" and opts["method"] not in ("gaussian", "median"):
        raise ValueError(f"{where}.method={opts['method']!r}: expected gaussian or median")
    if kind == "upscale":
        if opts["mode"] not in MODES:
            raise ValueError(f"{where}.mode={opts['mode']!r}: expected one of {list(MODES)}")
        if opts["size"] is None and not float(opts["factor"]) > 0:
            raise ValueError(f"{where}.factor={opts['factor']!r} must be > 0")
    if kind in ("sharpen", "denoise"):
        k = opts["kernel_size"]
        if not isinstance(k, int) or isinstance(k, bool) or k < 1 or k % 2 == 0:
            raise ValueError(f"{where}.kernel_size={k!r} must be an odd positive integer")
        if kind == "sharpen" or opts["method"] == "gaussian":
            if not float(opts["sigma"]) > 0:
                raise ValueError(f"{where}.sigma={opts['sigma']!r} must be > 0")


class Chain:
    """An ordered, validated list of post-processing steps; callable on [0,1] images.

    An empty chain returns its input object unchanged (bit-identical exports).

    Args:
        steps: step mappings ``{kind: upscale|sharpen|denoise, ...options}`` (see ``DEFAULTS``).
    """

    def __init__(self, steps: Sequence[Mapping[str, Any]] = ()):
        self.steps: list[dict[str, Any]] = []
        for i, step in enumerate(steps):
            where = f"postprocess.steps[{i}]"
            if not isinstance(step, Mapping) or "kind" not in step:
                raise ValueError(f"{where}={step!r} must be a mapping with a 'kind' "
                                 f"(one of {sorted(STEPS)})")
            kind = str(step["kind"])
            if kind not in STEPS:
                raise ValueError(f"{where}.kind={kind!r}: expected one of {sorted(STEPS)}")
            unknown = set(step) - {"kind"} - set(DEFAULTS[kind])
            if unknown:
                raise ValueError(f"{where} ({kind}) has unknown options {sorted(unknown)}; "
                                 f"valid: {sorted(DEFAULTS[kind])}")
            opts = {**DEFAULTS[kind], **{k: v for k, v in step.items() if k != "kind"}}
            _check(kind, opts, where)
            self.steps.append({"kind": kind, **opts})

    def __bool__(self) -> bool:
        return bool(self.steps)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Float images (N,C,H,W) in [0,1] -> post-processed float images in [0,1] (same object if empty)."""
        if not self.steps:
            return images
        if not images.is_floating_point():
            raise ValueError(f"post-processing works on float images in [0,1], got {images.dtype}")
        x = images.float()
        for step in self.steps:
            x = STEPS[step["kind"]](x, **{k: v for k, v in step.items() if k != "kind"})
        return x

    def describe(self) -> list[dict[str, Any]]:
        """The applied steps with every option filled in (recorded in prompts.jsonl)."""
        return [dict(s) for s in self.steps]


def build_chain(cfg: Any) -> Chain:
    """A :class:`Chain` from the ``postprocess`` config node (``{steps: [...]}``), a plain list of
    steps, or None (no post-processing).

    Args:
        cfg: the config node.
    """
    if cfg is None:
        return Chain()
    if hasattr(cfg, "keys") or isinstance(cfg, Mapping):
        from omegaconf import OmegaConf

        plain = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else cfg
        unknown = set(plain) - {"steps"}
        if unknown:
            raise ValueError(f"postprocess has unknown keys {sorted(unknown)}; expected {{steps: [...]}}")
        steps = plain.get("steps") or []
    else:
        from omegaconf import ListConfig, OmegaConf

        steps = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, ListConfig) else cfg
    if not isinstance(steps, (list, tuple)):
        raise ValueError(f"postprocess.steps={steps!r} must be a list of steps")
    chain = Chain(steps)
    if chain:
        log.info("post-processing exported images: %s", " -> ".join(s["kind"] for s in chain.steps))
    return chain
