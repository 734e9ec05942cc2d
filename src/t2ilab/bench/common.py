"""Shared pieces of ``scripts/benchmark.py``: device choice (with clear errors and recorded
fallbacks), config composition, synchronised timing, peak memory and the environment record."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

DEVICES = ("auto", "cpu", "cuda")
# dense bf16 tensor-core peaks (TFLOP/s) for MFU; other devices get achieved TFLOP/s only
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "4090": 165.0}


def pick_device(asked: str) -> tuple[torch.device, list[str]]:
    """The device to measure on and the fallbacks taken (notes). Unknown names are an error."""
    if asked not in DEVICES:
        raise SystemExit(f"--device {asked!r} is not a device this benchmark knows; use one of {', '.join(DEVICES)}")
    if asked == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: this torch build sees no CUDA device "
                         f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); run with --device cpu, "
                         "or on a GPU machine with a CUDA build of torch")
    if asked == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return dev, [] if dev.type == "cuda" else ["--device auto: no CUDA device, measuring on the CPU"]
    return torch.device(asked), []


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def timed(device: torch.device, out: dict, key: str = "seconds") -> Iterator[None]:
    """Wall time of the block with the device drained before and after."""
    sync(device)
    t0 = time.perf_counter()
    yield
    sync(device)
    out[key] = time.perf_counter() - t0


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        try:  # Linux: "5" resets the process' peak RSS (VmHWM)
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass


def peak_memory_mb(device: torch.device) -> float:
    """Peak device memory since the last reset (CUDA: allocated tensors; CPU: process peak RSS)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def compose(overrides: list[str]) -> Any:
    """The train config composed with ``overrides`` (outside a Hydra run)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from t2ilab.utils.config import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return hydra_compose("train", overrides=[*overrides, "paths.run_dir=."])


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def environment(device: torch.device) -> dict[str, Any]:
    """Device, library versions, git SHA and load: what a number in the JSON was measured with."""
    import diffusers
    import lightning

    root = Path(__file__).resolve().parents[3]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        sha, dirty = None, None
    return {"device": describe_device(device), "device_type": device.type, "git_sha": sha, "git_dirty": dirty,
            "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "lightning": lightning.__version__, "diffusers": diffusers.__version__,
            "load_average_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
