"""Checkpoint IO: lazy readers for every supported format, inspection, compatibility, the atomic writer.

``open_checkpoint(path)`` reads headers/indexes only; ``ckpt.get(name, device)`` materialises one tensor.
The names below are loaded on first use (PEP 562), so that opening and summarising a checkpoint
(``weightsmith inspect``) does not import torch through the writer or the compatibility checks.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Checkpoint": "base", "CheckpointSummary": "base", "TensorInfo": "base", "CompatReport": "compat",
    "compare": "compat", "layer_index": "layers", "num_layers": "layers", "open_checkpoint": "open",
    "CheckpointWriter": "writer", "parse_size": "writer",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'engine.checkpoints' has no attribute '{name}'")
    value = getattr(import_module(f"engine.checkpoints.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
