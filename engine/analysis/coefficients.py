"""Per-model, per-layer coefficients of a merge node as a matrix (learned AdaMerging λ, schedules).

``coefficient_matrix`` resolves one per-model or layer-varying parameter (``weight``, ``lambda``, …) at
every layer exactly as the executor does for a tensor of that layer, so what the heatmap shows is what
the merge applies: layer-wise AdaMerging's learned ``λ_t,ℓ``, a LiNeS ramp, a mergekit gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from engine.errors import EngineInputError
from engine.methods.base import MethodSpec
from engine.methods.schedule import resolve_params


@dataclass
class CoefficientMatrix:
    """``values[t, l]`` for model ``rows[t]`` at layer ``l`` (a single row when the parameter is shared)."""

    param: str
    rows: list[str]
    values: np.ndarray


EFFECTIVE = "effective"


def coefficient_matrix(spec: MethodSpec, params: Mapping[str, Any], keys: Sequence[str], num_layers: int,
                       param: str) -> CoefficientMatrix:
    """Resolve ``param`` of a merge node at each of ``num_layers`` layers (for each input model).

    ``param = "effective"`` (methods declaring ``linear`` only) gives the coefficient each task vector
    finally gets at each layer — e.g. λ·w_t for task arithmetic, after normalisation and schedules.
    """
    if param == EFFECTIVE:
        return _effective(spec, params, keys, num_layers)
    try:
        declared = spec.param(param)
    except KeyError:
        raise EngineInputError(f"{spec.label} has no parameter '{param}'") from None
    if declared.type not in ("float", "int"):
        raise EngineInputError(f"'{param}' is not numeric")
    layers = max(1, num_layers)
    columns = []
    for layer in range(layers):
        resolved = resolve_params([declared], params, keys, f"layers.{layer}.weight", layer, layers)[param]
        columns.append([float(v) for v in resolved] if declared.per_model else [float(resolved)])
    values = np.array(columns, dtype=float).T
    return CoefficientMatrix(param, list(keys) if declared.per_model else [param], values)


def _effective(spec: MethodSpec, params: Mapping[str, Any], keys: Sequence[str], num_layers: int) -> CoefficientMatrix:
    if spec.linear is None:
        raise EngineInputError(f"{spec.label} is not a fixed linear combination; pick one of its parameters")
    layers = max(1, num_layers)
    columns = [spec.linear(resolve_params(spec.params, params, keys, f"layers.{layer}.weight", layer, layers),
                           len(keys))[0] for layer in range(layers)]
    return CoefficientMatrix("effective coefficient", list(keys), np.array(columns, dtype=float).T)
