"""``merge_lora``: N PEFT LoRA adapters of one base in, one PEFT LoRA adapter out.

Per adapted weight, with ``ΔW_t = s_t · B_t A_t`` the t-th adapter's delta (``s_t`` its ``lora_alpha/r``,
or ``/√r`` with rsLoRA, per module with ``rank_pattern``/``alpha_pattern``) and ``w_t`` its weight:

- ``cat`` (PEFT's concatenation): ``A = [w_1 s_1 A_1; …; w_n s_n A_n]``, ``B = [B_1 … B_n]``, so
  ``B A = Σ w_t ΔW_t`` exactly; the rank is Σ r_t (per module: the adapters that adapt it);
- ``svd``, ``ties_svd``, ``dare_linear_svd``, ``dare_ties_svd``, ``magnitude_prune_svd`` (PEFT's
  ``add_weighted_adapter`` names): the engine's task arithmetic / TIES / DARE-linear / DARE-TIES /
  magnitude pruning (``combinations``) combines the dense ΔW_t, then the best rank-r approximation
  (truncated SVD) is written as ``B = U_r S_r``, ``A = V_rᵀ``. Linear combinations (``svd``) never form the
  dense deltas: the SVD of the concatenated factors is exact and costs a QR of out × Σr_t;
- ``knots`` (``engine.methods.knots``): one SVD aligns the deltas in a shared basis, a merge method
  combines the aligned coefficients, and the merged update is truncated to rank r the same way.

The output's ``adapter_config.json`` is the first adapter's with ``lora_alpha = r`` and rsLoRA off, so the
scale is 1 and the factors carry every scale and weight (PEFT's convention for a combined adapter; PEFT's
SVD path scaled twice before huggingface/peft#3111, and kept rsLoRA before #3449: this is the fixed form);
modules whose rank differs from the most common one (``cat``) get ``rank_pattern``/``alpha_pattern``
entries. ``target_modules`` is the union of the inputs' (PEFT's rule). Only adapters that adapt a weight
take part in its combination (PEFT's rule: TIES counts and DARE draws see only those). Factors are
written in float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from engine.checkpoints import Checkpoint, layer_index, num_layers
from engine.checkpoints.lora_extract import low_rank_factors
from engine.checkpoints.lora_reader import LoraCheckpoint
from engine.checkpoints.lora_writer import AdapterFactors, check_output, scale_one_config, write_peft_adapter
from engine.errors import EngineInputError
from engine.lora_merge.adapters import Target, adapter_rank, match_targets, open_adapters
from engine.lora_merge.combinations import Combination, checked_values, combination_for
from engine.methods import MergeInputs, TensorContext
from engine.methods.knots import align, svd_of_product
from engine.methods.schedule import resolve_params


@dataclass
class LoraMerge:
    """What a LoRA merge wrote: the folder, the method, the rank per module and the approximation error
    ``‖ΔW − B A‖ / ‖ΔW‖`` per module (ΔW: the combined update before truncation; 0 for ``cat``)."""

    path: Path
    method: str
    ranks: dict[str, int] = field(default_factory=dict)
    relative_error: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def merge_lora(adapters: Sequence[str | Path], out: str | Path, *, method: str = "svd",
               weights: Sequence[float] | None = None, rank: int | None = None,
               params: Mapping[str, Any] | None = None, combine: str = "ties", base: Checkpoint | None = None,
               seed: int = 0, device: str | torch.device = "cpu", force: bool = False) -> LoraMerge:
    """Merge the PEFT LoRA adapter folders ``adapters`` into one adapter folder ``out`` (atomically).

    ``weights``: one per adapter (default 1). ``rank``: the output rank of the SVD methods and KnOTS (default
    the largest input rank, as PEFT); ``cat`` keeps Σ r_t and takes none. ``params``: the combination
    method's parameters (``density``, ``lambda``, ``normalize``…); ``combine``: KnOTS's merge of the aligned
    coefficients (``ties``, ``task_arithmetic``, ``dare_ties``, ``dare_linear``). ``base``: when given,
    every adapted weight is checked against it. Everything is checked before anything is computed.
    """
    out = Path(out).expanduser().resolve()
    combination = combination_for(method, combine)
    if not adapters:
        raise EngineInputError("merge-lora needs at least one adapter")
    weights = [1.0] * len(adapters) if weights is None else [float(w) for w in weights]
    if len(weights) != len(adapters):
        raise EngineInputError(f"{len(weights)} weights for {len(adapters)} adapters")
    if not all(math.isfinite(w) for w in weights):
        raise EngineInputError(f"the adapter weights must be finite numbers, got {weights}")
    if method == "cat" and rank is not None:
        raise EngineInputError("cat keeps every rank (the sum of the adapters' ranks); choose a rank with svd or knots")
    keys = [f"adapter{i}" for i in range(len(adapters))]
    label = f"knots ({combine})" if method == "knots" else method
    values = checked_values(combination, dict(params or {}), keys, label)
    if combination is not None:
        values["weight"] = weights
        if any(p.name == "seed" for p in combination.spec.params):
            values.setdefault("seed", seed)
    opened = open_adapters(adapters)
    try:
        targets = match_targets(opened, base)
        if not targets:
            raise EngineInputError("the adapters hold no LoRA factors to merge", path=str(opened[0].path))
        if rank is None and method != "cat":
            rank = max(adapter_rank(opened[i], t.name) for t in targets for i in t.adapters)
        if rank is not None:
            _check_rank(rank, targets, opened)
        protected = [a.path for a in opened] + ([base.path] if base is not None else [])
        check_output(out, force, protected)
        result = LoraMerge(out, method)
        count = num_layers([t.name for t in targets])
        factors: dict[str, AdapterFactors] = {}
        for target in targets:
            inputs = [(opened[i].factors(target.name, device), weights[i]) for i in target.adapters]
            if combination is None:
                (a, b), error = _concatenate(inputs), 0.0
            else:
                resolved = _resolve(combination, values, keys, target, count)
                ctx = TensorContext(target.name, layer_index(target.name), count, torch.device(device),
                                    int(values.get("seed", 0)))
                merge = _knots if method == "knots" else _svd_family
                a, b, error = merge(inputs, combination, resolved, ctx, rank)
            factors[target.module] = AdapterFactors(a, b, target.embedding)
            result.ranks[target.module] = a.shape[0]
            result.relative_error[target.module] = error
        config = _output_config(opened, result.ranks)
        saved = [n for a in opened for n in a.notes if "modules_to_save" in n]
        if saved:
            result.notes.append(f"{len(saved)} full weight(s) saved by modules_to_save are not LoRA factors and were "
                                f"left out, e.g. {saved[0]}")
        write_peft_adapter(out, factors, config, force=force, protected=protected)
        return result
    finally:
        for adapter in opened:
            adapter.close()


def _check_rank(rank: int, targets: list[Target], adapters: list[LoraCheckpoint]) -> None:
    if rank < 1:
        raise EngineInputError(f"the rank must be at least 1, got {rank}")
    for target in targets:
        if rank > min(target.shape):
            raise EngineInputError(f"rank {rank} is larger than the matrix {list(target.shape)}", tensor=target.name,
                                   path=str(adapters[target.adapters[0]].path))


def _resolve(combination: Combination, values: dict[str, Any], keys: list[str], target: Target,
             count: int) -> dict[str, Any]:
    """The combination's parameters for one weight, per-model lists cut to the adapters that adapt it."""
    spec = combination.spec
    resolved = resolve_params(spec.params, values, keys, target.name, layer_index(target.name), count)
    for p in spec.params:
        if p.per_model:
            resolved[p.name] = [resolved[p.name][i] for i in target.adapters]
    return resolved


Factors = tuple[torch.Tensor, torch.Tensor, float]  # (A, B, scale) of one adapter's weight


def _concatenate(inputs: list[tuple[Factors, float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """PEFT's ``cat``: ``A = [w_t s_t A_t]`` stacked by rows, ``B = [B_t]`` side by side."""
    a = torch.cat([f_a * (w * s) for (f_a, _, s), w in inputs], dim=0)
    b = torch.cat([f_b for (_, f_b, _), _ in inputs], dim=1)
    return a, b


def _truncate(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor,
              rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(A, B, relative error)`` of the rank-``rank`` truncation of ``U diag(S) Vh``, zero-padded to ``rank``
    where the update has fewer singular values."""
    a, b = vh[:rank], u[:, :rank] * s[:rank]
    if a.shape[0] < rank:
        a = torch.cat([a, a.new_zeros(rank - a.shape[0], a.shape[1])])
        b = torch.cat([b, b.new_zeros(b.shape[0], rank - b.shape[1])], dim=1)
    total = float(s.double().square().sum())
    error = (float(s[rank:].double().square().sum()) / total) ** 0.5 if total > 0 else 0.0
    return a.contiguous(), b.contiguous(), error


def _svd_family(inputs: list[tuple[Factors, float]], combination: Combination, params: dict[str, Any],
                ctx: TensorContext, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Combine the dense deltas with the engine method, then truncate to ``rank``."""
    spec = combination.spec
    if spec.linear is not None:  # Σ c_t ΔW_t: the SVD of the concatenated factors, no dense delta
        coefs, _ = spec.linear(params, len(inputs))
        a, b = _concatenate([(f, c) for (f, _), c in zip(inputs, coefs)])
        return _truncate(*svd_of_product(b, a), rank)
    deltas = [(f_b @ f_a) * s for (f_a, f_b, s), _ in inputs]
    merged = spec.merge(MergeInputs(torch.zeros_like(deltas[0]), [f"t{i}" for i in range(len(deltas))],
                                    deltas=deltas), params, ctx)
    a, b = low_rank_factors(merged, rank)
    norm = float(torch.linalg.vector_norm(merged))
    error = float(torch.linalg.vector_norm(merged - b @ a)) / norm if norm > 0 else 0.0
    return a, b, error


def _knots(inputs: list[tuple[Factors, float]], combination: Combination, params: dict[str, Any], ctx: TensorContext,
           rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """KnOTS: align the deltas (``engine.methods.knots.align``), merge the coefficients, truncate."""
    u, coefficients = align([f_b * s for (_, f_b, s), _ in inputs], [f_a for (f_a, _, _), _ in inputs])
    merged = combination.spec.merge(MergeInputs(torch.zeros_like(coefficients[0]),
                                                [f"t{i}" for i in range(len(coefficients))], deltas=coefficients),
                                    params, ctx)
    return _truncate(*svd_of_product(u, merged), rank)


def _output_config(adapters: list[LoraCheckpoint], ranks: dict[str, int]) -> dict[str, Any]:
    """The first adapter's config, with the merged targets, ranks and a scale of 1."""
    config = dict(adapters[0].adapter_config)
    for key in ("rank_pattern", "alpha_pattern", "modules_to_save", "use_dora", "lora_bias"):
        config.pop(key, None)
    config["target_modules"] = _target_modules([a.adapter_config.get("target_modules") for a in adapters], ranks)
    return scale_one_config(ranks, config)


def _target_modules(declared: list[Any], ranks: dict[str, int]) -> Any:
    """The union of the inputs' ``target_modules`` (lists: their union; regular expressions: joined with
    ``|``, as PEFT does); the adapted modules' names when the inputs mix the two or declare none."""
    if all(isinstance(d, (list, tuple)) for d in declared):
        return sorted({m for d in declared for m in d})
    if all(isinstance(d, str) for d in declared):
        return declared[0] if len(set(declared)) == 1 else "|".join(f"({d})" for d in dict.fromkeys(declared))
    return sorted({m.rsplit(".", 1)[-1] for m in ranks})
