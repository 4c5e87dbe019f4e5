"""Geometry of the task vectors: cosine similarities, per-layer norms, singular-value spectra.

- ``CosineMatrix``: cos(τi, τj) over the whole model — near 0 means the tasks touch orthogonal
  directions (the premise of task arithmetic and of MetaGPT's closed form).
- ``LayerNorms``: ‖τt‖ per layer (and of a merged update θ − θ0 when given), the quantity LiNeS rescales.
- ``Spectra``: singular values of the summed task matrix Στt of each 2-D weight, normalised by the
  largest — a steep decay is the low-rank structure Iso-C flattens and LoRE-Merging exploits.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import torch

from engine.analysis.source import TensorDeltas, layer_label


@dataclass
class Cosines:
    """``matrix[i, j]`` = cos(τi, τj); ``norms[i]`` = ‖τi‖ over the whole model."""

    matrix: np.ndarray
    norms: np.ndarray


class CosineMatrix:
    """Whole-model cosine similarity of every pair of task vectors (one pass, T×T dot products)."""

    def __init__(self) -> None:
        self._dots: np.ndarray | None = None

    def observe(self, td: TensorDeltas) -> None:
        m = torch.stack([d.reshape(-1) for d in td.deltas])
        dots = (m @ m.T).double().cpu().numpy()
        self._dots = dots if self._dots is None else self._dots + dots

    def result(self) -> Cosines:
        dots = self._dots if self._dots is not None else np.zeros((0, 0))
        norms = np.sqrt(np.clip(np.diag(dots), 0, None))
        denom = np.outer(norms, norms)
        with np.errstate(invalid="ignore", divide="ignore"):
            matrix = np.where(denom > 0, dots / np.where(denom > 0, denom, 1), 0.0)
        return Cosines(matrix, norms)


@dataclass
class LayerNormTable:
    """``tasks[t, l]`` = ‖τt‖ restricted to layer ``layers[l]``; ``merged[l]`` the merged update's (or None)."""

    layers: list[str]
    tasks: np.ndarray
    merged: np.ndarray | None


class LayerNorms:
    """Per-layer L2 norms of each task vector and, when the source carries it, of the merged update θ − θ0."""

    def __init__(self) -> None:
        self._sq: dict[str, np.ndarray] = {}
        self._merged_sq: dict[str, float] = {}

    def observe(self, td: TensorDeltas) -> None:
        key = layer_label(td.layer)
        sq = np.array([float(d.double().pow(2).sum()) for d in td.deltas])
        self._sq[key] = self._sq.get(key, 0.0) + sq
        if td.merged is not None:
            upd = td.merged.to(td.base.device, torch.float32) - td.base
            self._merged_sq[key] = self._merged_sq.get(key, 0.0) + float(upd.double().pow(2).sum())

    def result(self) -> LayerNormTable:
        layers = sorted(self._sq, key=lambda k: (k == "other", int(k) if k.isdigit() else 0))
        tasks = np.sqrt(np.stack([self._sq[k] for k in layers], axis=1)) if layers else np.zeros((0, 0))
        merged = np.sqrt([self._merged_sq.get(k, 0.0) for k in layers]) if self._merged_sq else None
        return LayerNormTable(layers, tasks, merged)


@dataclass
class SpectrumTable:
    """``values[name]`` = normalised singular values of Στt for each analysed 2-D tensor, with its layer."""

    values: dict[str, np.ndarray]
    layers: dict[str, int | None]
    skipped: list[str]


class Spectra:
    """Singular values of the summed task matrix of every 2-D tensor up to ``max_dim`` on its short side."""

    def __init__(self, max_dim: int = 1024):
        self.max_dim = max_dim
        self._values: dict[str, np.ndarray] = {}
        self._layers: dict[str, int | None] = {}
        self._skipped: list[str] = []

    def observe(self, td: TensorDeltas) -> None:
        if td.base.dim() != 2:
            return
        if min(td.base.shape) > self.max_dim:
            self._skipped.append(td.name)
            return
        total = torch.stack(td.deltas).sum(0)
        sv = torch.linalg.svdvals(total).double().cpu().numpy()
        self._values[td.name] = sv / sv[0] if sv.size and sv[0] > 0 else sv
        self._layers[td.name] = td.layer

    def result(self) -> SpectrumTable:
        return SpectrumTable(self._values, self._layers, self._skipped)
