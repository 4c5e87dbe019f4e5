"""Dtype names as users write them (fp16, bf16, fp32, float16, …) and back.

Torch-free at import: headers are described by torch's own dtype names (``float16``), which the
checkpoint layer reads without torch (``weightsmith inspect`` starts without it); torch is imported
only when a name becomes a ``torch.dtype``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.errors import EngineInputError

if TYPE_CHECKING:
    import torch

_ALIASES = {
    "fp32": "float32", "float32": "float32", "float": "float32", "f32": "float32",
    "fp16": "float16", "float16": "float16", "half": "float16", "f16": "float16",
    "bf16": "bfloat16", "bfloat16": "bfloat16",
    "fp64": "float64", "float64": "float64",
}
_SHORT = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64"}
# Bytes per element of the dtypes checkpoints store, by torch's name.
ITEM_SIZES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int16": 2,
              "int8": 1, "uint8": 1, "bool": 1, "float8_e4m3fn": 1, "float8_e5m2": 1}
_FLOATS = {"float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"}


def torch_name(dtype: Any) -> str:
    """Torch's name of a ``torch.dtype`` (``float16``); a name is returned as it is."""
    return dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")


def to_torch(name: str) -> "torch.dtype":
    """The ``torch.dtype`` of a torch dtype name (imports torch)."""
    import torch

    return getattr(torch, name)


def is_float_name(name: str) -> bool:
    """Whether a torch dtype name is a floating-point type."""
    return name in _FLOATS


def parse_dtype(name: "str | torch.dtype | None") -> "torch.dtype | None":
    """Parse a dtype name; ``None`` or ``"auto"`` stays ``None`` (keep the input's dtype)."""
    if name is None:
        return None
    if not isinstance(name, str):
        import torch

        if isinstance(name, torch.dtype):
            return name
    key = str(name).strip().lower().removeprefix("torch.")
    if key in ("", "auto", "none"):
        return None
    if key not in _ALIASES:
        raise EngineInputError(f"unknown dtype '{name}' (use fp32, fp16 or bf16)")
    return to_torch(_ALIASES[key])


def dtype_name(dtype: "torch.dtype | str") -> str:
    """Short name of a dtype or of torch's name for it: fp16, bf16, fp32, … (torch's own name for the others)."""
    name = torch_name(dtype)
    return _SHORT.get(name, name)
