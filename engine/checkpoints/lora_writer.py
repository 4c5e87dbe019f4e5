"""Writing a PEFT LoRA adapter folder atomically: ``adapter_config.json`` + ``adapter_model.safetensors``.

The one writer of LoRA adapters (``lora_extract`` and ``engine.lora_merge`` use it). Factor names follow
PEFT's saved layout: ``base_model.model.<module>.lora_A.weight`` / ``lora_B.weight`` for linear layers and
``base_model.model.<module>.lora_embedding_A`` / ``lora_embedding_B`` for embeddings. The folder is built
in a hidden temporary sibling and published by ``engine.checkpoints.publish`` (never onto a folder that
appeared meanwhile; with ``force`` only onto an earlier Weightsmith output), so a failure leaves nothing.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
from safetensors.torch import save_file

from engine.checkpoints.publish import check_replaceable, make_temporary, publish, release, tidy
from engine.errors import EngineInputError


@dataclass
class AdapterFactors:
    """One target module's factors: ``B @ A`` (B: out × r, A: r × in) times the config's scale is its delta."""

    a: torch.Tensor
    b: torch.Tensor
    embedding: bool = False


def check_output(out: Path, force: bool, protected: Iterable[Path]) -> None:
    """Refuse (before any work) an existing output folder unless ``force`` may replace it."""
    if out.exists() and not force:
        raise EngineInputError("the output folder already exists; choose another or allow overwriting (--force)",
                               path=str(out))
    if force:
        check_replaceable(out, list(protected))


def scale_one_config(ranks: dict[str, int], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """An ``adapter_config.json`` whose scale is 1 for every module: ``lora_alpha = r`` (PEFT's
    ``add_weighted_adapter`` convention), rsLoRA off, and, where modules differ in rank, a
    ``rank_pattern``/``alpha_pattern`` entry (the escaped full module name) for each module whose rank is
    not the most common one. ``ranks`` maps module names to ranks; ``base`` supplies the other keys
    (``target_modules``, when it has none: the adapted modules' last name components)."""
    counts: dict[int, int] = {}
    for r in ranks.values():
        counts[r] = counts.get(r, 0) + 1
    common = max(counts, key=lambda r: (counts[r], r))
    pattern = {re.escape(m): r for m, r in sorted(ranks.items()) if r != common}
    config = dict(base or {})
    config.update({"peft_type": "LORA", "r": common, "lora_alpha": common, "use_rslora": False,
                   "rank_pattern": pattern, "alpha_pattern": dict(pattern)})
    config.setdefault("target_modules", sorted({m.rsplit(".", 1)[-1] for m in ranks}))
    config.setdefault("lora_dropout", 0.0)
    config.setdefault("bias", "none")
    config.setdefault("fan_in_fan_out", False)
    return config


def write_peft_adapter(out: Path, modules: dict[str, AdapterFactors], config: dict[str, Any], *,
                       force: bool = False, protected: Iterable[Path] = ()) -> Path:
    """Write ``modules`` (module name → factors) and ``config`` as a PEFT adapter folder at ``out``."""
    out = Path(out).expanduser().resolve()
    tensors: dict[str, torch.Tensor] = {}
    for module, f in modules.items():
        a_key, b_key = ("lora_embedding_A", "lora_embedding_B") if f.embedding else ("lora_A.weight", "lora_B.weight")
        tensors[f"base_model.model.{module}.{a_key}"] = f.a.detach().to("cpu", torch.float32).contiguous()
        tensors[f"base_model.model.{module}.{b_key}"] = f.b.detach().to("cpu", torch.float32).contiguous()
    out.parent.mkdir(parents=True, exist_ok=True)
    tidy(out.parent)
    tmp, lock = make_temporary(out)
    try:
        save_file(tensors, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        publish(tmp, out, force=force, protected=list(protected))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        release(lock)
    return out
