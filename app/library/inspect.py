"""Checkpoint inspection for the library (runs in worker threads; no Qt here).

``inspect_path`` opens a checkpoint (headers only), summarises it and keeps a file-less copy of its
headers, so the library can list tensors and check compatibility without holding files open.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from engine.checkpoints import Checkpoint, CheckpointSummary, CompatReport, compare, open_checkpoint
from engine.errors import CheckpointError


class HeaderCheckpoint(Checkpoint):
    """A checkpoint's header facts (names, shapes, dtypes, metadata) with no file behind them."""

    def __init__(self, source: Checkpoint):
        super().__init__(source.path)
        self.format = source.format
        self.kind = source.kind
        self._infos = {n: source.info(n) for n in source.names}
        self.metadata = dict(source.metadata)
        self.notes = list(source.notes)

    def _load(self, name: str) -> torch.Tensor:
        raise CheckpointError("only the headers were inspected", path=str(self.path), tensor=name)


@dataclass
class Inspection:
    """What the library knows about one checkpoint."""

    path: str
    summary: CheckpointSummary
    headers: HeaderCheckpoint


def inspect_path(path: str | Path) -> Inspection:
    """Open ``path`` (any format the engine reads), summarise it and close it again."""
    with open_checkpoint(path) as ckpt:
        return Inspection(str(path), ckpt.summary(), HeaderCheckpoint(ckpt))


def compatibility(base: HeaderCheckpoint, others: dict[str, HeaderCheckpoint]) -> dict[str, CompatReport]:
    """How each of ``others`` (by key) fits ``base``: same tensor names and shapes."""
    return {key: compare(base, other) for key, other in others.items()}
