"""Statistics files: per-model statistics gathered on data, opened by the graph for the methods that read them.

``weightsmith learn fisher|regmean`` runs the models over task data and writes a *statistics file*
(``engine.learn.statistics``); a merge method that merges with it declares a ``StatisticsFile`` (its
kind, the ``path`` parameter naming the file, the shape of a model's statistic for a tensor, the JSON
metadata it reads). Methods never open files: for every tensor the executor hands the method a
``FileTensorStatistics`` as ``ctx.statistics``, and this module opens the file on first use, once per
run, checks it with errors that name the file (and the tensor), and reads one tensor at a time.

The file is a safetensors file. For each input model (by its node id in the recipe) and tensor name it
holds the tensor ``"{model}::{tensor}"``. Its metadata hold ``weightsmith_statistics`` (the kind),
``models`` (a JSON list of the node ids it covers) and method-specific JSON entries (Fisher:
``fisher_norms``, an object of each model's whole-Fisher L2 norm). A relative path in a recipe is taken
from the recipe's folder; ``weightsmith learn`` writes an absolute one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch

from engine.checkpoints import Checkpoint, open_checkpoint
from engine.errors import EngineInputError
from engine.methods.base import StatisticsFile

KEY_SEPARATOR = "::"
KIND_KEY = "weightsmith_statistics"


def statistics_key(model: str, tensor: str) -> str:
    """The name under which a statistics file stores ``model``'s statistic of ``tensor``."""
    return f"{model}{KEY_SEPARATOR}{tensor}"


class OpenStatistics:
    """One open statistics file: its kind, the models it covers, its parsed metadata, lazy tensor reads."""

    def __init__(self, path: Path, checkpoint: Checkpoint, json_keys: Sequence[str]):
        self.path = path
        self.checkpoint = checkpoint
        meta = checkpoint.metadata
        self.kind = meta.get(KIND_KEY)
        try:
            self.models: list[str] = json.loads(meta.get("models", "[]"))
            self.metadata: dict[str, Any] = {k: json.loads(meta[k]) for k in json_keys if k in meta}
        except ValueError as exc:
            raise EngineInputError(f"statistics file has malformed metadata ({exc})", path=str(path)) from exc
        if not isinstance(self.models, list):
            raise EngineInputError("statistics file has malformed metadata ('models' is not a list)", path=str(path))

    def require(self, kind: str, keys: Sequence[str]) -> None:
        """Raise unless the file holds ``kind`` statistics for every model in ``keys``."""
        if self.kind != kind:
            raise EngineInputError(f"not a {kind} statistics file (it holds {self.kind or 'no Weightsmith statistics'};"
                                   f" make one with `weightsmith learn {kind}`)", path=str(self.path))
        missing = [k for k in keys if k not in self.models]
        if missing:
            raise EngineInputError(f"the statistics cover models {', '.join(map(str, self.models))}, not "
                                   f"{', '.join(missing)} (was a node renamed? learn again)", path=str(self.path))

    def tensor(self, model: str, name: str, device: torch.device, shape: tuple[int, ...]) -> torch.Tensor | None:
        """``model``'s statistic of tensor ``name`` in fp32 on ``device``, or None when it has none;
        raises unless it has the expected ``shape``."""
        key = statistics_key(model, name)
        if key not in self.checkpoint:
            return None
        found = self.checkpoint.info(key).shape
        if tuple(found) != tuple(shape):
            raise EngineInputError(f"the statistics of model '{model}' for tensor '{name}' have shape {list(found)}, "
                                   f"expected {list(shape)} (gathered on another model? learn again)",
                                   path=str(self.path), tensor=name)
        return self.checkpoint.get(key, device, dtype=torch.float32)


class StatisticsFiles:
    """The statistics files of one run, each opened once on first use and closed with the run."""

    def __init__(self) -> None:
        self._open: dict[Path, OpenStatistics] = {}

    def open(self, path: str, need: StatisticsFile, keys: Sequence[str]) -> OpenStatistics:
        """The file at ``path``, checked to hold ``need.kind`` statistics of every model in ``keys``."""
        if not path:
            raise EngineInputError("no statistics file given: run `weightsmith learn` to gather the statistics "
                                   "this method merges with")
        p = Path(path).expanduser().resolve()
        if p not in self._open:
            if not p.is_file():
                raise EngineInputError("statistics file not found (run `weightsmith learn` again?)", path=str(p))
            checkpoint = open_checkpoint(p)
            try:
                self._open[p] = OpenStatistics(p, checkpoint, need.metadata)
            except BaseException:
                checkpoint.close()
                raise
        stats = self._open[p]
        stats.require(need.kind, keys)
        return stats

    def for_tensor(self, need: StatisticsFile, path: str, keys: Sequence[str], name: str,
                   shape: tuple[int, ...], device: torch.device) -> "FileTensorStatistics":
        """What a method declaring ``need`` receives as ``ctx.statistics`` for tensor ``name`` (no IO yet)."""
        return FileTensorStatistics(self, need, path, list(keys), name, tuple(shape), device)

    def close(self) -> None:
        """Close every file opened."""
        for stats in self._open.values():
            stats.checkpoint.close()
        self._open.clear()


class FileTensorStatistics:
    """One tensor's per-model statistics from a statistics file (``engine.methods.base.TensorStatistics``):
    the file is opened and checked on the first call."""

    def __init__(self, files: StatisticsFiles, need: StatisticsFile, path: str, keys: list[str], name: str,
                 shape: tuple[int, ...], device: torch.device):
        self._files = files
        self._need = need
        self._path = path
        self._keys = keys
        self._name = name
        self._shape = shape
        self._device = device
        self.source = path

    def _file(self) -> OpenStatistics:
        stats = self._files.open(self._path, self._need, self._keys)
        self.source = str(stats.path)
        return stats

    def tensors(self) -> list[torch.Tensor | None]:
        """Per input model: its statistic of this tensor (fp32, on the device), None where there is none."""
        stats = self._file()
        expected = self._need.shape(self._shape)
        if expected is None:
            return [None] * len(self._keys)
        return [stats.tensor(k, self._name, self._device, expected) for k in self._keys]

    def metadata(self, key: str, default: Any = None) -> Any:
        """A declared JSON metadata entry of the file, parsed (``default`` when the file has none)."""
        if key not in self._need.metadata:
            raise KeyError(f"metadata '{key}' is not declared by the method's StatisticsFile")
        return self._file().metadata.get(key, default)
