"""The reader interface every checkpoint format implements, and its inspection summary.

Torch-free at import: a header is described by names (``TensorInfo.dtype_name``), so opening and
summarising a checkpoint needs no torch; reading a tensor imports it.
"""

from __future__ import annotations

import json
import math
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.checkpoints.layers import layer_index, num_layers
from engine.errors import CheckpointError
from engine.runtime import dtypes

if TYPE_CHECKING:
    import torch


def require_regular_file(path: Path) -> None:
    """Refuse, before any read, a path that is not a regular file: a FIFO or device would block or never end."""
    try:
        mode = Path(path).stat().st_mode
    except FileNotFoundError:
        raise CheckpointError("file not found", path=str(path)) from None
    except OSError as exc:
        raise CheckpointError(f"cannot access ({exc.strerror or exc})", path=str(path)[:300]) from None
    if not stat.S_ISREG(mode):
        raise CheckpointError("not a regular file (a FIFO, device or socket); nothing was read", path=str(path))


@dataclass(frozen=True)
class TensorInfo:
    """Header facts of one tensor: known without reading its data (nor importing torch)."""

    name: str
    shape: tuple[int, ...]
    dtype_name: str  # torch's name of the stored dtype: float16, bfloat16, int64, …

    @property
    def dtype(self) -> torch.dtype:
        return dtypes.to_torch(self.dtype_name)

    @property
    def is_floating_point(self) -> bool:
        return dtypes.is_float_name(self.dtype_name)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        size = dtypes.ITEM_SIZES.get(self.dtype_name)
        if size is None:  # a dtype checkpoints rarely store: ask torch
            import torch

            size = torch.empty((), dtype=self.dtype).element_size()
        return self.numel * size

    @property
    def layer(self) -> int | None:
        return layer_index(self.name)


@dataclass
class CheckpointSummary:
    """What the library shows about a checkpoint."""

    path: str
    format: str
    kind: str
    num_tensors: int
    num_params: int
    num_bytes: int
    dtypes: dict[str, int]
    num_layers: int
    architecture: str | None
    metadata: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Checkpoint:
    """A lazily read checkpoint. Subclasses fill ``_infos`` on open and implement ``_load``.

    ``kind`` is ``model`` for full weights and ``delta`` for task vectors (PEFT LoRA adapters).
    """

    format = "unknown"
    kind = "model"

    def __init__(self, path: Path):
        self.path = Path(path)
        self._infos: dict[str, TensorInfo] = {}
        self.metadata: dict[str, str] = {}
        self.notes: list[str] = []

    @property
    def names(self) -> list[str]:
        return list(self._infos)

    def __contains__(self, name: str) -> bool:
        return name in self._infos

    def info(self, name: str) -> TensorInfo:
        try:
            return self._infos[name]
        except KeyError:
            raise CheckpointError(f"no tensor '{name}'", path=str(self.path), tensor=name) from None

    def get(self, name: str, device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> torch.Tensor:
        """Materialise one tensor on ``device`` (optionally cast); errors name the file and tensor."""
        self.info(name)
        try:
            t = self._load(name)
        except CheckpointError:
            raise
        except Exception as exc:  # the format libraries raise many types; the user needs file + tensor
            raise CheckpointError(f"cannot read tensor '{name}': {exc}", path=str(self.path), tensor=name) from exc
        if dtype is not None and t.dtype != dtype:
            t = t.to(dtype)
        return t.to(device) if str(device) != "cpu" else t

    def _load(self, name: str) -> torch.Tensor:
        raise NotImplementedError

    def close(self) -> None:
        """Release file handles."""

    def config(self) -> dict[str, Any] | None:
        """The Hugging Face ``config.json`` beside the weights, when there is one."""
        folder = self.path if self.path.is_dir() else self.path.parent
        cfg = folder / "config.json"
        if not cfg.is_file():
            return None
        try:
            return json.loads(cfg.read_text())
        except (OSError, ValueError):
            return None

    def summary(self) -> CheckpointSummary:
        infos = list(self._infos.values())
        counts = Counter(dtypes.dtype_name(i.dtype_name) for i in infos)
        cfg = self.config() or {}
        arch = (cfg.get("architectures") or [None])[0] or cfg.get("model_type")
        return CheckpointSummary(
            path=str(self.path), format=self.format, kind=self.kind, num_tensors=len(infos),
            num_params=sum(i.numel for i in infos), num_bytes=sum(i.nbytes for i in infos),
            dtypes=dict(counts), num_layers=num_layers(self._infos), architecture=arch,
            metadata=dict(self.metadata), notes=list(self.notes),
        )

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
