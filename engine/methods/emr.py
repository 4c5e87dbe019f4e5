"""EMR-Merging: one unified task vector plus a tiny mask and rescaler per task (Elect, Mask & Rescale).

Huang et al. 2024, "EMR-Merging: Tuning-Free High-Performance Model Merging" (NeurIPS 2024,
arXiv:2405.17461); reference code harveyhuang18/EMR_Merging, also FusionBench ``emr_merging``.

Per tensor, with task vectors τ_t = θ_t − θ0:

- elect: ``γ = sign(Σ_t τ_t)``, ``τ_uni = γ ⊙ max_t |τ_t ⊙ 1[τ_t ⊙ γ > 0]|`` (largest agreeing magnitude);
- mask: ``m_t = 1[τ_t ⊙ τ_uni > 0]``;
- rescale (whole model): ``λ_t = Σ|τ_t| / Σ|m_t ⊙ τ_uni|``;
- task t's model: ``θ_t = θ0 + λ_t · m_t ⊙ τ_uni``.

The merge node's single output (what a Save node writes as ``model.safetensors``, what loads anywhere) is
the unified model ``θ0 + τ_uni``. The per-task parts go in ``emr_parts.safetensors`` beside it (``PARTS_FILE``;
format in ``parts_plan`` / ``SavedParts``), and evaluation scores each task with its own θ_t
(``engine.evaluation.task_models``).

Choices, and what this implementation does:

- ``rescaler='model'`` (default) is the paper's formula, sums over every entry of the model;
  ``'tensor_means'`` is the authors' code, which sums each tensor's *mean* |·| over tensors (every tensor
  then weighs the same whatever its size);
- every float tensor takes part (the authors' code merges the whole state dict);
- ``sign(0) = 0``: where the task vectors sum to exactly zero τ_uni is 0 and no mask keeps the entry
  (the authors' code counts such entries as negative);
- a task whose masked unified vector is zero over the whole model (its task vector is zero, or disagrees
  everywhere) gets λ_t = 1: θ_t = θ0 whatever λ_t is.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from engine.errors import EngineInputError
from engine.methods.base import MergeInputs, MethodSpec, ModelStatistic, Param, TaskParts, TensorContext
from engine.methods.registry import register
from engine.methods.statistics import GroupSums

PARTS_FILE = "emr_parts.safetensors"
PARTS_FORMAT = "weightsmith-emr-parts"
TAU_SUFFIX = ".emr_tau"
MASK_SUFFIX = ".emr_mask."  # followed by the task's 0-based position among the merge's inputs
_BITS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def elect(deltas: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(τ_uni, [m_t]) for one tensor: the elected unified task vector and each task's bool mask."""
    sign = torch.stack(deltas).sum(dim=0).sign_()
    magnitude = torch.zeros_like(deltas[0])
    masks = []
    for tau in deltas:
        agree = (tau * sign) > 0
        masks.append(agree)
        torch.maximum(magnitude, tau.abs().mul_(agree), out=magnitude)
    return magnitude.mul_(sign), masks


def rescaler_terms(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> dict[str, torch.Tensor]:
    """One tensor's share of the rescalers: per task Σ|τ_t| ("abs") and Σ|m_t ⊙ τ_uni| ("kept"), or their
    means with ``rescaler='tensor_means'``."""
    n = inputs.base.numel()
    if n == 0:
        return {}
    deltas = inputs.deltas
    unified, masks = elect(deltas)
    size = n if params["rescaler"] == "tensor_means" else 1
    kept = unified.abs_()
    return {"abs": torch.stack([d.abs().sum(dtype=torch.float64) for d in deltas]) / size,
            "kept": torch.stack([kept[m].sum(dtype=torch.float64) for m in masks]) / size}


def rescaler_statistic(params: dict[str, Any]) -> ModelStatistic:
    """One pass summing the rescalers' numerators and denominators over the whole model."""
    return GroupSums(rescaler_terms)


def rescalers(stats: dict[str, torch.Tensor] | None, n: int) -> list[float]:
    """λ_t = Σ|τ_t| / Σ|m_t ⊙ τ_uni| per task, from the statistic's sums (1 where the denominator is 0)."""
    if not stats:
        return [1.0] * n
    return [float(a / k) if float(k) > 0 else 1.0 for a, k in zip(stats["abs"].tolist(), stats["kept"].tolist())]


def emr_unified(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> torch.Tensor:
    """The unified model θ0 + τ_uni (the merge node's single output)."""
    unified, _ = elect(inputs.deltas)
    return unified.add_(inputs.base)


def emr_task_model(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext, t: int) -> torch.Tensor:
    """Task t's own model: θ0 + λ_t · m_t ⊙ τ_uni (t = the task's position among the inputs)."""
    if not 0 <= t < len(inputs):
        raise EngineInputError(f"EMR task index {t} is outside the {len(inputs)} connected models", tensor=ctx.name)
    unified, masks = elect(inputs.deltas)
    lam = rescalers(ctx.stats, len(inputs))[t]
    return unified.mul_(masks[t]).mul_(lam).add_(inputs.base)


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """A bool mask as uint8 bits, 8 entries a byte: flat entry i is bit ``i % 8`` (least significant first)
    of byte ``i // 8``; the last byte is padded with zeros."""
    flat = mask.reshape(-1).to(torch.uint8)
    flat = torch.nn.functional.pad(flat, (0, -flat.numel() % 8)).view(-1, 8)
    return (flat * _BITS.to(flat.device)).sum(dim=1, dtype=torch.uint8)


def unpack_mask(packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of ``pack_mask``: the bool mask of ``shape``."""
    bits = (packed.reshape(-1, 1) & _BITS.to(packed.device)) != 0
    return bits.reshape(-1)[: math.prod(shape)].reshape(shape)


def parts_plan(shape: tuple[int, ...], dtype: torch.dtype, n: int) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """Saved per merged tensor: τ_uni in the output dtype (``<name>.emr_tau``) and, per task t, its packed
    mask (``<name>.emr_mask.<t>``, uint8, ``ceil(numel / 8)`` bytes)."""
    packed = (-(-math.prod(shape) // 8),)
    return [(TAU_SUFFIX, tuple(shape), dtype)] + [(f"{MASK_SUFFIX}{t}", packed, torch.uint8) for t in range(n)]


def parts_tensors(inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> dict[str, torch.Tensor]:
    """One tensor's saved parts (see ``parts_plan``)."""
    unified, masks = elect(inputs.deltas)
    return {TAU_SUFFIX: unified, **{f"{MASK_SUFFIX}{t}": pack_mask(m) for t, m in enumerate(masks)}}


def parts_metadata(params: dict[str, Any], stats: Any, tasks: list[dict[str, Any]]) -> dict[str, str]:
    """The parts file's header: its format, the tasks in input order (node id and expert file) and their λ_t."""
    return {"weightsmith_parts": PARTS_FORMAT, "emr_tasks": json.dumps(tasks),
            "emr_rescalers": json.dumps(rescalers(stats, len(tasks))), "emr_rescaler": str(params["rescaler"])}


class SavedParts:
    """The EMR parts saved beside a merged model (``PARTS_FILE`` in its folder): rebuilds each task's model
    from the unified weights as ``θ_t = θ_uni + (λ_t · m_t − 1) ⊙ τ_uni``."""

    def __init__(self, path: Path):
        self.path = path
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                self.names = set(f.keys())
            if meta.get("weightsmith_parts") != PARTS_FORMAT:
                raise ValueError(f"not an EMR parts file (weightsmith_parts={meta.get('weightsmith_parts')!r})")
            self.tasks: list[dict[str, Any]] = json.loads(meta["emr_tasks"])
            self.rescalers: list[float] = [float(v) for v in json.loads(meta["emr_rescalers"])]
            if len(self.rescalers) != len(self.tasks):
                raise ValueError(f"{len(self.tasks)} tasks but {len(self.rescalers)} rescalers")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise EngineInputError(f"cannot read the EMR parts ({exc})", path=str(path)) from exc

    @classmethod
    def beside(cls, checkpoint: str | Path) -> "SavedParts | None":
        """The parts saved in a checkpoint's folder, or None when it has none."""
        p = Path(checkpoint)
        path = (p if p.is_dir() else p.parent) / PARTS_FILE
        return cls(path) if path.is_file() else None

    def task_state(self, unified: dict[str, torch.Tensor], t: int) -> dict[str, torch.Tensor]:
        """Task t's state dict from the unified one (tensors without parts are shared, not copied)."""
        if not 0 <= t < len(self.tasks):
            raise EngineInputError(f"the EMR parts hold {len(self.tasks)} tasks, not task {t}", path=str(self.path))
        if not any(name + TAU_SUFFIX in self.names for name in unified):
            raise EngineInputError("the EMR parts name none of the model's tensors", path=str(self.path))
        out = dict(unified)
        lam = self.rescalers[t]
        with safe_open(str(self.path), framework="pt") as f:
            for name, value in unified.items():
                if name + TAU_SUFFIX not in self.names:
                    continue
                key = f"{name}{MASK_SUFFIX}{t}"
                if key not in self.names:
                    raise EngineInputError(f"the EMR parts have no mask for task {t}", path=str(self.path), tensor=key)
                tau = f.get_tensor(name + TAU_SUFFIX).to(value.device, torch.float32)
                mask = unpack_mask(f.get_tensor(key).to(value.device), tuple(value.shape))
                out[name] = value.float() + tau.mul_(mask.to(tau.dtype).mul_(lam).sub_(1.0))
        return out


register(MethodSpec(
    name="emr",
    label="EMR-Merging",
    family="emr",
    summary="One elected task vector plus a bit mask and a rescaler per task: each task gets its own model.",
    params=(
        Param("rescaler", "choice", "model",
              "λ_t = Σ|τ_t| / Σ|m_t ⊙ τ_uni| summed over every entry (paper), or over tensors' means (authors' code)",
              choices=("model", "tensor_means")),
    ),
    merge=emr_unified,
    needs_base=True,
    min_models=1,
    reference="Huang et al. 2024, EMR-Merging (arXiv:2405.17461); code harveyhuang18/EMR_Merging",
    statistic=rescaler_statistic,
    task_parts=TaskParts(file=PARTS_FILE, model=emr_task_model, plan=parts_plan, tensors=parts_tensors,
                         metadata=parts_metadata),
))
