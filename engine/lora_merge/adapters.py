"""The input adapters of a LoRA merge: opened, and checked to be LoRA adapters of one and the same base.

Refused, naming the adapter (and the tensor where there is one): a folder that is not a PEFT LoRA
adapter; DoRA, LoRA-bias or non-LoRA PEFT types (their delta is not ``scale·B@A``); a different
``base_model_name_or_path`` or ``fan_in_fan_out`` than the first adapter's; a target module whose
weight shape (or embedding/linear kind) differs from another adapter's; with ``base`` given, a target
module the base lacks or whose shape differs from the base's weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from engine.checkpoints import Checkpoint, open_checkpoint
from engine.checkpoints.lora_reader import LoraCheckpoint
from engine.errors import EngineInputError


@dataclass
class Target:
    """One adapted weight of the merged adapter: its name, its shape in the factors' layout
    (``B @ A``: out × in), whether it is an embedding, and which adapters (by position) adapt it."""

    name: str
    shape: tuple[int, int]
    embedding: bool
    adapters: list[int]

    @property
    def module(self) -> str:
        return self.name[: -len(".weight")]


def open_adapters(paths: Sequence[str | Path]) -> list[LoraCheckpoint]:
    """Open every path as a PEFT LoRA adapter folder (the ones already opened are closed on a refusal)."""
    opened: list[LoraCheckpoint] = []
    try:
        for path in paths:
            ckpt = open_checkpoint(path)
            if not isinstance(ckpt, LoraCheckpoint):
                ckpt.close()
                raise EngineInputError("not a PEFT LoRA adapter folder (no adapter_config.json)", path=str(path))
            opened.append(ckpt)
            _check_config(ckpt)
    except BaseException:
        for ckpt in opened:
            ckpt.close()
        raise
    return opened


def _check_config(adapter: LoraCheckpoint) -> None:
    cfg = adapter.adapter_config
    kind = cfg.get("peft_type", "LORA")
    if str(kind).upper() != "LORA":
        raise EngineInputError(f"a {kind} adapter, not a LoRA one; only LoRA adapters can be merged",
                               path=str(adapter.path))
    for key, what in (("use_dora", "DoRA"), ("lora_bias", "LoRA bias")):
        if cfg.get(key):
            raise EngineInputError(f"a {what} adapter ({key}: true): its delta is not scale·B@A, so it cannot be "
                                   "merged as a plain LoRA", path=str(adapter.path))


def match_targets(adapters: Sequence[LoraCheckpoint], base: Checkpoint | None = None) -> list[Target]:
    """Every adapted weight of any adapter, checked across the adapters (and against ``base``)."""
    first = adapters[0]
    first_cfg = first.adapter_config
    for adapter in adapters[1:]:
        cfg = adapter.adapter_config
        mine, theirs = cfg.get("base_model_name_or_path"), first_cfg.get("base_model_name_or_path")
        if mine and theirs and _norm(mine) != _norm(theirs):
            raise EngineInputError(f"this adapter was trained on '{mine}', the first one ('{first.path}') on "
                                   f"'{theirs}': adapters of different bases cannot be merged", path=str(adapter.path))
        if bool(cfg.get("fan_in_fan_out")) != bool(first_cfg.get("fan_in_fan_out")):
            raise EngineInputError(f"fan_in_fan_out is {bool(cfg.get('fan_in_fan_out'))} here and "
                                   f"{bool(first_cfg.get('fan_in_fan_out'))} in the first adapter ('{first.path}'): "
                                   "they do not adapt the same base layers", path=str(adapter.path))
    targets: dict[str, Target] = {}
    owner: dict[str, int] = {}
    for i, adapter in enumerate(adapters):
        for name in adapter.names:
            a, b = adapter.factor_shapes(name)
            shape = (b[0], a[1])
            embedding = adapter.is_embedding(name)
            known = targets.get(name)
            if known is None:
                targets[name] = Target(name, shape, embedding, [i])
                owner[name] = i
                continue
            if known.shape != shape or known.embedding != embedding:
                other = adapters[owner[name]].path
                raise EngineInputError(
                    f"adapts '{name}' as {_kind(embedding)} of shape {list(adapter.info(name).shape)}, but "
                    f"'{other}' adapts it as {_kind(known.embedding)} of shape "
                    f"{list(adapters[owner[name]].info(name).shape)}: not the same base", path=str(adapter.path),
                    tensor=name)
            known.adapters.append(i)
    if base is not None:
        for name, target in targets.items():
            adapter = adapters[target.adapters[0]]
            if name not in base:
                raise EngineInputError(f"adapts '{name}', which the base '{base.path}' does not have",
                                       path=str(adapter.path), tensor=name)
            if tuple(base.info(name).shape) != tuple(adapter.info(name).shape):
                raise EngineInputError(f"adapts '{name}' with shape {list(adapter.info(name).shape)}, but the base "
                                       f"'{base.path}' has {list(base.info(name).shape)}", path=str(adapter.path),
                                       tensor=name)
    return sorted(targets.values(), key=lambda t: t.name)


def adapter_rank(adapter: LoraCheckpoint, name: str) -> int:
    """The rank of one adapted weight (the rows of its A factor)."""
    return adapter.factor_shapes(name)[0][0]


def _kind(embedding: bool) -> str:
    return "an embedding" if embedding else "a linear layer"


def _norm(name: str) -> str:
    return str(name).rstrip("/")
