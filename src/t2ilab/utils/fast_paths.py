"""Fast paths (config group ``perf``): each a switch, ``auto`` = the fastest correct choice for the
device the run trains on (measured per device in docs/benchmarks.md, ``scripts/benchmark.py``).

Every choice is resolved once, before training, into concrete values; a path this build cannot take
(``torch.compile`` without a C++ compiler / Triton, fused AdamW without support) falls back with
the reason logged and returned (train.py stores it in the manifest, the benchmark in its JSON):
what runs is never silently different from what was asked for.
"""

from __future__ import annotations

import inspect
import logging
import shutil
from typing import Any, Mapping

import torch

log = logging.getLogger(__name__)

OPTIMIZER_IMPLS = ("auto", "fused", "foreach", "loop")
# measured choice per device type for every "auto" (docs/benchmarks.md has the numbers)
AUTO: dict[str, dict[str, Any]] = {
    "cuda": {"channels_last": True, "compile": True, "optimizer_impl": "fused", "data_on_device": True,
             "sync_free_guard": True},
    "cpu": {"channels_last": False, "compile": False, "optimizer_impl": "fused", "data_on_device": True,
            "sync_free_guard": False},
}
# CPU flags of native bf16 arithmetic (oneDNN runs bf16 convolutions / matmuls fast with these)
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
DEFAULTS = {"channels_last": "auto", "compile": "auto", "optimizer_impl": "auto", "foreach_ema": True,
            "data_on_device": "auto", "sync_free_guard": "auto"}


def training_device(accelerator: str | None) -> torch.device:
    """The device a Lightning ``accelerator`` setting trains on (``auto``: CUDA when present)."""
    acc = str(accelerator or "auto").lower()
    if acc in ("gpu", "cuda") or (acc == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def compile_unavailable(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot run on ``device`` with this build (None = it can)."""
    if not hasattr(torch, "compile"):
        return "this torch has no torch.compile"
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "Triton is not installed (pip install triton)"
    elif not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")):
        return "no C++ compiler on PATH (inductor's CPU backend needs g++/clang++)"
    return None


def fused_unavailable(device: torch.device) -> str | None:
    """Why fused AdamW is unavailable on ``device`` (None = available)."""
    if "fused" not in inspect.signature(torch.optim.AdamW).parameters:
        return "this torch's AdamW has no fused implementation"
    if device.type not in ("cuda", "cpu", "mps", "xpu"):
        return f"fused AdamW does not support {device.type}"
    return None


def resolve(perf: Mapping[str, Any] | None, device: torch.device) -> tuple[dict[str, Any], list[str]]:
    """Concrete fast-path choices for ``device`` and the fallbacks taken (human-readable notes).

    Args:
        perf: the ``perf`` config node (missing keys take ``DEFAULTS``).
        device: the training device.
    """
    asked = {**DEFAULTS, **dict(perf or {})}
    unknown = set(asked) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown perf option(s) {sorted(unknown)}; valid: {sorted(DEFAULTS)}")
    auto = AUTO.get(device.type, AUTO["cpu"])
    out = {k: (auto[k] if str(v) == "auto" else v) for k, v in asked.items()}
    if out["optimizer_impl"] not in OPTIMIZER_IMPLS:
        raise ValueError(f"perf.optimizer_impl={out['optimizer_impl']!r}: expected one of {OPTIMIZER_IMPLS}")
    notes: list[str] = []
    if out["compile"] and (why := compile_unavailable(device)):
        out["compile"] = False
        notes.append(f"perf.compile: {why}; running eager")
    if out["optimizer_impl"] == "fused" and (why := fused_unavailable(device)):
        out["optimizer_impl"] = "foreach"
        notes.append(f"perf.optimizer_impl=fused: {why}; using foreach")
    if out["channels_last"] and device.type not in ("cuda", "cpu"):
        out["channels_last"] = False
        notes.append(f"perf.channels_last: not used on {device.type}")
    for note in notes:
        log.warning("fast path fallback: %s", note)
    return {k: bool(v) if k != "optimizer_impl" else v for k, v in out.items()}, notes


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none: not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16(device: torch.device) -> str | None:
    """Why bf16 autocast is *not* fast on ``device`` (None = it is): CUDA GPUs with bf16 units
    (Ampere and newer); CPUs with bf16 instructions (AVX512-BF16 or AMX-BF16). Elsewhere bf16 is
    emulated and slower than fp32."""
    if device.type == "cuda":
        try:
            ok = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # older torch: no including_emulation
            ok = torch.cuda.is_bf16_supported()
        return None if ok else f"{torch.cuda.get_device_name(device)} has no native bf16"
    if device.type == "cpu":
        found = cpu_flags() & BF16_CPU_FLAGS
        return None if found else f"this CPU has none of {sorted(BF16_CPU_FLAGS)} (/proc/cpuinfo)"
    return f"no bf16 detection for {device.type}"


def resolve_precision(precision: Any, device: torch.device) -> tuple[str, str | None]:
    """``trainer.precision`` for Lightning: ``auto`` becomes ``bf16-mixed`` where bf16 is native on
    ``device`` and ``32-true`` elsewhere (the note says why); any other value passes unchanged.
    Measured at equal wall on fmnist_diffusion (docs/results.md): bf16-mixed trains 1.30x the
    steps of fp32 on an AVX512-BF16 CPU and wins on accuracy and distance."""
    value = str(precision if precision is not None else "32-true")
    if value != "auto":
        return value, None
    why = native_bf16(device)
    if why is None:
        return "bf16-mixed", None
    note = f"trainer.precision=auto: {why}; training in 32-true"
    log.info(note)
    return "32-true", note


def optimizer_kwargs(impl: str, factory: Any) -> dict[str, Any]:
    """Keyword arguments selecting an AdamW/Adam implementation (none for other optimisers)."""
    fn = getattr(factory, "func", factory)
    params = inspect.signature(fn).parameters if callable(fn) else {}
    if impl in ("auto", None) or "foreach" not in params:
        return {}
    if impl == "fused":
        return {"fused": True} if "fused" in params else {"foreach": True}
    return {"foreach": impl == "foreach"}


def apply(model: Any, datamodule: Any, choices: Mapping[str, Any], device: torch.device) -> None:
    """Apply resolved ``choices`` to a family module and its datamodule (before ``trainer.fit``)."""
    model.optimizer_impl = choices["optimizer_impl"]
    model.sync_free_guard = bool(choices["sync_free_guard"])
    if model.ema is not None:
        model.ema.foreach = bool(choices["foreach_ema"])
    if choices["channels_last"]:
        model.to(memory_format=torch.channels_last)
    if choices["compile"]:
        from torch import _dynamo

        _dynamo.config.suppress_errors = True  # a graph inductor cannot build runs eager (logged)
        for net in model.compile_targets():
            net.compile()  # in place: state-dict keys (checkpoints) stay those of the eager module
    if datamodule is not None and hasattr(datamodule, "batches_on"):
        datamodule.batches_on = device if choices["data_on_device"] else None
