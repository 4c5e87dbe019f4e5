"""Dtype names as users write them (fp16, bf16, fp32, float16, …) and back."""

from __future__ import annotations

import torch

from engine.errors import EngineInputError

_ALIASES = {
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32, "f32": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16, "f16": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp64": torch.float64, "float64": torch.float64,
}
_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64"}


def parse_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    """Parse a dtype name; ``None`` or ``"auto"`` stays ``None`` (keep the input's dtype)."""
    if name is None or isinstance(name, torch.dtype):
        return name
    key = str(name).strip().lower().removeprefix("torch.")
    if key in ("", "auto", "none"):
        return None
    if key not in _ALIASES:
        raise EngineInputError(f"unknown dtype '{name}' (use fp32, fp16 or bf16)")
    return _ALIASES[key]


def dtype_name(dtype: torch.dtype) -> str:
    """Short name of a dtype: fp16, bf16, fp32, … (torch's own name for the others)."""
    return _NAMES.get(dtype, str(dtype).removeprefix("torch."))
