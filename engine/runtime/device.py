"""Compute-device choice: ``auto`` picks CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

import torch

from engine.errors import EngineInputError


def available_devices() -> list[str]:
    """Names of the devices this machine can compute on, best first."""
    devices = []
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" if i else "cuda" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    devices.append("cpu")
    return devices


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """Turn a user's device choice (``auto``, ``cpu``, ``cuda``, ``cuda:1``, ``mps``) into a device.

    Raises EngineInputError when the named device is not present on this machine.
    """
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device(available_devices()[0])
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise EngineInputError(f"device '{name}' was asked for, but no CUDA device is available")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise EngineInputError(f"device '{name}' does not exist ({torch.cuda.device_count()} CUDA devices)")
        return dev
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise EngineInputError("device 'mps' was asked for, but Apple MPS is not available")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise EngineInputError(f"unknown device '{name}' (use auto, cpu, cuda, cuda:N or mps)")
