"""PyTorch ``.bin``/``.pt``/``.pth`` checkpoints, loaded with ``weights_only=True`` (never unpickling code).

Zip-format files are memory-mapped (``mmap=True``), so tensors are paged in only when used; legacy
(pre-1.6) files cannot be mapped and are read whole. Nested dicts (``{"state_dict": {...}}``) are
flattened with dots. Sharded ``pytorch_model.bin.index.json`` sets are read shard by shard on demand.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.checkpoints.base import Checkpoint, TensorInfo, require_regular_file
from engine.errors import CheckpointError
from engine.runtime.dtypes import torch_name

if TYPE_CHECKING:
    import torch


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a torch checkpoint safely and flatten it to ``{name: tensor}``.

    A tensor whose logical size exceeds the bytes its storage holds (an expanded, zero-stride view that
    would allocate its full size on first use) is refused by name before anything is allocated.
    """
    import torch

    require_regular_file(path)
    try:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc) and "zip" not in str(exc):
                raise
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError("file not found", path=str(path)) from None
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            "refused to load: the file's pickle asks to run code or build objects that are not plain "
            f"tensors (loaded with weights_only=True; convert it to safetensors if you trust it). Detail: {exc}",
            path=str(path)) from exc
    except Exception as exc:
        raise CheckpointError(f"not a readable PyTorch checkpoint ({exc})", path=str(path)) from exc
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "module"):
            inner = obj.get(key)
            if isinstance(inner, dict) and any(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    flat: dict[str, torch.Tensor] = {}
    _flatten(obj, "", flat, torch.Tensor)
    if not flat:
        raise CheckpointError("the file holds no tensors", path=str(path))
    for name, t in flat.items():
        logical, stored = t.numel() * t.element_size(), t.untyped_storage().nbytes()
        if logical > stored:
            raise CheckpointError(f"tensor '{name}' claims {logical:,} bytes but its file stores {stored:,} (an "
                                  "expanded or broadcast view); refusing to allocate it", path=str(path), tensor=name)
    return flat


def _flatten(obj: Any, prefix: str, out: dict[str, torch.Tensor], tensor_type: type) -> None:
    if isinstance(obj, tensor_type):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out, tensor_type)


class TorchCheckpoint(Checkpoint):
    """One or several (sharded) PyTorch pickle files, tensors memory-mapped where possible."""

    format = "pytorch"

    def __init__(self, path: Path, weight_map: dict[str, str] | None = None):
        super().__init__(path)
        self._shards: dict[Path, dict[str, torch.Tensor]] = {}
        self._file_of: dict[str, Path] = {}
        if weight_map is None:
            files = [path]
        else:
            self.format = "pytorch (sharded)"
            files = sorted({path / f for f in weight_map.values()})
        for f in files:
            sd = load_state_dict(f)
            self._shards[f] = sd
            for name, t in sd.items():
                self._infos[name] = TensorInfo(name, tuple(t.shape), torch_name(t.dtype))
                self._file_of[name] = f

    def _load(self, name: str) -> torch.Tensor:
        return self._shards[self._file_of[name]][name]

    def close(self) -> None:
        self._shards.clear()
