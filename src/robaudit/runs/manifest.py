"""Run manifests: software versions, hashes of inputs, device, seed, start/end time and completion status."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform
from typing import Any

import torch

TRACKED_PACKAGES = ["robaudit", "torch", "timm", "torchattacks", "diffusers", "safetensors", "numpy"]


def versions() -> dict[str, str | None]:
    """Installed versions of the packages that determine results, plus Python's."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def device_info(device: torch.device) -> dict[str, Any]:
    """The device a run used, with the GPU's name when there is one."""
    info: dict[str, Any] = {"type": device.type, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
    else:
        info["name"] = platform.processor() or platform.machine()
    return info


def now() -> str:
    """Current UTC time, ISO 8601."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available else cpu; ``cpu``/``cuda``/``cuda:N`` as given (checked)."""
    from robaudit.errors import ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use cpu, cuda or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {name!r}; use cpu, cuda or auto")
    return device
