"""Writing statistics files (the format is described in ``engine.graph.statistics_files``, which reads them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import torch
from safetensors.torch import save_file

from engine.errors import EngineInputError
from engine.graph.statistics_files import KIND_KEY


def write_statistics(path: str | Path, kind: str, models: Sequence[str], tensors: Mapping[str, torch.Tensor],
                     metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``tensors`` (fp32, CPU) as a ``kind`` statistics file covering ``models``; atomically
    (a temporary name renamed at the end). Tensors sharing memory are stored as separate copies.
    Returns the absolute path."""
    path = Path(path).expanduser().resolve()
    plain: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, value in tensors.items():
        value = value.detach().float().cpu().contiguous()
        if value.untyped_storage().data_ptr() in seen:
            value = value.clone()
        seen.add(value.untyped_storage().data_ptr())
        plain[key] = value
    meta = {KIND_KEY: kind, "models": json.dumps(list(models)), **(metadata or {})}
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(plain, str(tmp), metadata=meta)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise EngineInputError(f"cannot write the statistics file ({exc.strerror or exc})", path=str(path)) from exc
    return path
