"""Lazy safetensors reading: one file, or a Hugging Face sharded set with its index.

Headers are read through ``safetensors.safe_open`` (memory-mapped; no tensor data is touched until
``get``). The library validates headers and offsets, so truncated or garbage files fail on open. Each
file is opened once for torch and kept open, so a file replaced on disk meanwhile is still read as it
was opened; only in a process that has not imported torch (``weightsmith inspect``) is the header read
through the numpy view instead, and a later ``get`` opens the torch view then.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import safe_open

from engine.checkpoints.base import Checkpoint, TensorInfo, require_regular_file
from engine.errors import CheckpointError

if TYPE_CHECKING:
    import torch

# safetensors' dtype codes → torch's names (both fp8 kinds exist in the torch this project pins)
_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
    "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}


def _open(path: Path, framework: str = "numpy"):
    require_regular_file(path)
    try:
        return safe_open(str(path), framework=framework, device="cpu")
    except FileNotFoundError:
        raise CheckpointError("file not found", path=str(path)) from None
    except Exception as exc:  # SafetensorError and OSError: header too large, truncated, garbage
        raise CheckpointError(f"not a readable safetensors file ({exc})", path=str(path)) from exc


class SafetensorsCheckpoint(Checkpoint):
    """One ``.safetensors`` file, or several files mapped by ``model.safetensors.index.json``."""

    format = "safetensors"

    def __init__(self, path: Path, files: list[Path] | None = None, weight_map: dict[str, str] | None = None):
        super().__init__(path)
        self._handles: dict[Path, object] = {}  # the files' torch views
        self._file_of: dict[str, Path] = {}
        if weight_map is not None:
            self.format = "safetensors (sharded)"
            folder = path if path.is_dir() else path.parent
            files = sorted({folder / f for f in weight_map.values()})
        for f in files or [path]:
            handle = _open(f, "pt" if "torch" in sys.modules else "numpy")  # no torch import for a header
            if "torch" in sys.modules:
                self._handles[f] = handle
            if not self.metadata:
                self.metadata = dict(handle.metadata() or {})
            for name in handle.keys():
                if weight_map is not None and Path(folder / weight_map.get(name, "")) != f:
                    continue
                if name in self._file_of:
                    raise CheckpointError(f"tensor '{name}' appears in two files ({self._file_of[name].name}, {f.name})",
                                          path=str(path), tensor=name)
                sl = handle.get_slice(name)
                dtype = _DTYPES.get(sl.get_dtype())
                if dtype is None:
                    raise CheckpointError(f"unsupported dtype {sl.get_dtype()} of tensor '{name}'", path=str(f), tensor=name)
                self._infos[name] = TensorInfo(name, tuple(sl.get_shape()), dtype)
                self._file_of[name] = f
        if weight_map is not None:
            missing = [n for n in weight_map if n not in self._file_of]
            if missing:
                raise CheckpointError(f"the index lists {len(missing)} tensor(s) its shards lack, e.g. '{missing[0]}'",
                                      path=str(path), tensor=missing[0])

    def _load(self, name: str) -> torch.Tensor:
        f = self._file_of[name]
        handle = self._handles.get(f)
        if handle is None:
            handle = self._handles[f] = _open(f, "pt")
        return handle.get_tensor(name)

    def file_of(self, name: str) -> Path:
        """The file holding ``name`` (for per-file reader threads)."""
        return self._file_of[name]

    def close(self) -> None:
        self._handles.clear()


def read_index(index_path: Path) -> dict[str, str]:
    """The ``weight_map`` of a Hugging Face ``*.index.json``, validated."""
    require_regular_file(index_path)
    try:
        data = json.loads(index_path.read_text())
        weight_map = data["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"unreadable shard index ({exc})", path=str(index_path)) from exc
    return {str(k): str(v) for k, v in weight_map.items()}
