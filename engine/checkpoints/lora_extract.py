"""Extracting a LoRA adapter of chosen rank from a (merged or fine-tuned) model against its base.

What ``mergekit-extract-lora`` does: for every 2-D weight the two models share (embeddings left out
unless asked), the difference ``Δ = θ − θ0`` is replaced by its best rank-r approximation (truncated
SVD, Eckart–Young): ``B = U_r·S_r``, ``A = V_rᵀ``, written in PEFT's format (``adapter_config.json`` with
``r = lora_alpha``, so the scale is 1, and ``adapter_model.safetensors`` with
``base_model.model.<module>.lora_A.weight`` / ``lora_B.weight``). The adapter reloads in
``engine.checkpoints.lora_reader`` (and PEFT) as the approximated delta (``lora_writer`` writes it).
Tensors a LoRA cannot hold (norms, biases) are listed with how much of the difference they carry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from engine.checkpoints.base import Checkpoint
from engine.checkpoints.lora_writer import AdapterFactors, check_output, scale_one_config, write_peft_adapter
from engine.errors import EngineInputError

EMBEDDINGS = re.compile(r"(embed|wte|wpe|lm_head|word_embeddings|position_embeddings)")


@dataclass
class Extraction:
    """What an extraction kept and lost."""

    path: Path
    rank: int
    modules: list[str] = field(default_factory=list)
    relative_error: dict[str, float] = field(default_factory=dict)  # ‖Δ − BA‖ / ‖Δ‖ per module
    left_out: list[str] = field(default_factory=list)  # changed tensors a LoRA cannot hold


def low_rank_factors(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, B)`` with ``B @ A`` the best rank-``rank`` approximation of ``delta`` (out × in)."""
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    return vh[:rank].contiguous(), (u[:, :rank] * s[:rank]).contiguous()


def extract_lora(model: Checkpoint, base: Checkpoint, out: str | Path, rank: int, *, embeddings: bool = False,
                 device: str | torch.device = "cpu", force: bool = False) -> Extraction:
    """Write the rank-``rank`` LoRA adapter of ``model − base`` to the folder ``out`` (atomically)."""
    out = Path(out).expanduser().resolve()
    if rank < 1:
        raise EngineInputError(f"the rank must be at least 1, got {rank}")
    check_output(out, force, [model.path, base.path])
    result = Extraction(out, rank)
    factors: dict[str, AdapterFactors] = {}
    for name in model.names:
        if name not in base or model.info(name).shape != base.info(name).shape:
            continue
        if not model.info(name).dtype.is_floating_point:
            continue
        delta = model.get(name, device, torch.float32) - base.get(name, device, torch.float32)
        norm = float(torch.linalg.vector_norm(delta))
        is_linear = delta.dim() == 2 and name.endswith(".weight") and (embeddings or not EMBEDDINGS.search(name))
        if not is_linear:
            if norm > 0:
                result.left_out.append(name)
            continue
        if rank > min(delta.shape):
            raise EngineInputError(f"rank {rank} is larger than the matrix {list(delta.shape)}", tensor=name,
                                   path=str(model.path))
        a, b = low_rank_factors(delta, rank)
        module = name[: -len(".weight")]
        factors[module] = AdapterFactors(a, b)
        result.modules.append(module)
        result.relative_error[module] = float(torch.linalg.vector_norm(delta - b @ a)) / norm if norm else 0.0
    if not factors:
        raise EngineInputError("the two models share no 2-D weights to extract a LoRA from", path=str(model.path))
    config = scale_one_config({m: rank for m in factors}, {"base_model_name_or_path": str(base.path)})
    write_peft_adapter(out, factors, config, force=force, protected=[model.path, base.path])
    return result
