"""Checkpoint IO: lazy readers for every supported format, inspection, compatibility, the atomic writer.

``open_checkpoint(path)`` reads headers/indexes only; ``ckpt.get(name, device)`` materialises one tensor.
"""

from engine.checkpoints.base import Checkpoint, CheckpointSummary, TensorInfo
from engine.checkpoints.compat import CompatReport, compare
from engine.checkpoints.layers import layer_index, num_layers
from engine.checkpoints.open import open_checkpoint
from engine.checkpoints.writer import CheckpointWriter, parse_size

__all__ = [
    "Checkpoint", "CheckpointSummary", "TensorInfo", "CompatReport", "compare", "layer_index", "num_layers",
    "open_checkpoint", "CheckpointWriter", "parse_size",
]
