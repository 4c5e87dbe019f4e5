"""PEFT LoRA adapters read as task vectors: each target weight's dense delta ``scale · B @ A``.

Names: ``base_model.model.<module>.lora_A[.<adapter>].weight`` become ``<module>.weight``. The scale is
``lora_alpha / r`` (``lora_alpha / sqrt(r)`` with ``use_rslora``), with PEFT's ``rank_pattern`` and
``alpha_pattern`` overrides matched on the module name's suffix. ``fan_in_fan_out`` adapters (GPT-2's
Conv1D) and embedding adapters are transposed to the base weight's layout. ``modules_to_save`` copies
are full weights, not deltas; they are listed in the notes and left out.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

from engine.checkpoints.base import Checkpoint, TensorInfo
from engine.checkpoints.safetensors_reader import SafetensorsCheckpoint
from engine.checkpoints.torch_reader import TorchCheckpoint
from engine.errors import CheckpointError

if TYPE_CHECKING:
    import torch

_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<part>A|B|embedding_A|embedding_B)(?:\.[^.]+)?(?:\.weight)?$")


class LoraCheckpoint(Checkpoint):
    """A PEFT LoRA adapter folder exposed as ``kind='delta'`` tensors named like the base's weights."""

    format = "peft-lora"
    kind = "delta"

    def __init__(self, folder: Path):
        super().__init__(folder)
        cfg_path = folder / "adapter_config.json"
        try:
            self.adapter_config = json.loads(cfg_path.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"unreadable adapter_config.json ({exc})", path=str(cfg_path)) from exc
        weights = folder / "adapter_model.safetensors"
        if weights.is_file():
            self._raw: Checkpoint = SafetensorsCheckpoint(weights)
        elif (folder / "adapter_model.bin").is_file():
            self._raw = TorchCheckpoint(folder / "adapter_model.bin")
        else:
            raise CheckpointError("adapter folder has no adapter_model.safetensors or adapter_model.bin", path=str(folder))
        self.metadata = dict(self._raw.metadata)
        self._pairs: dict[str, dict[str, str]] = {}
        for raw_name in self._raw.names:
            if ".modules_to_save." in raw_name:
                self.notes.append(f"'{raw_name}' is a full weight saved by modules_to_save; left out of the delta")
                continue
            m = _LORA_KEY.match(raw_name)
            if not m:
                self.notes.append(f"'{raw_name}' is not a LoRA factor; ignored")
                continue
            part = m.group("part").replace("embedding_", "")
            self._pairs.setdefault(m.group("module"), {})[part] = raw_name
            if m.group("part").startswith("embedding"):
                self._pairs[m.group("module")]["embedding"] = "1"
        for module, pair in self._pairs.items():
            if "A" not in pair or "B" not in pair:
                raise CheckpointError(f"LoRA factor pair incomplete for module '{module}'", path=str(folder), tensor=module)
            a, b = self._raw.info(pair["A"]), self._raw.info(pair["B"])
            if len(a.shape) != 2 or len(b.shape) != 2:
                raise CheckpointError(f"only linear and embedding LoRA adapters are supported; '{module}' has "
                                      f"factors of shapes {list(a.shape)} and {list(b.shape)}", path=str(folder), tensor=module)
            shape = (b.shape[0], a.shape[1])
            if "embedding" in pair or self.adapter_config.get("fan_in_fan_out"):
                shape = (shape[1], shape[0])
            name = f"{module}.weight"
            self._infos[name] = TensorInfo(name, shape, "float32")

    def scale(self, module: str) -> float:
        """``alpha / r`` for one module, honouring rank_pattern, alpha_pattern and rsLoRA."""
        cfg = self.adapter_config
        r = _pattern_value(cfg.get("rank_pattern") or {}, module, cfg.get("r", 8))
        alpha = _pattern_value(cfg.get("alpha_pattern") or {}, module, cfg.get("lora_alpha", r))
        return alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r

    def factors(self, name: str, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, float]:
        """``(A, B, scale)`` of the target weight ``name`` as stored, in fp32: its delta is ``scale · B @ A``,
        transposed to the base weight's layout where ``transposed(name)``."""
        import torch

        module = name[: -len(".weight")]
        pair = self._pairs[module]
        a = self._raw.get(pair["A"], device, torch.float32)
        b = self._raw.get(pair["B"], device, torch.float32)
        return a, b, self.scale(module)

    def factor_shapes(self, name: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The stored shapes of the A (r × in) and B (out × r) factors of the target weight ``name``
        (from the headers)."""
        pair = self._pairs[name[: -len(".weight")]]
        return tuple(self._raw.info(pair["A"]).shape), tuple(self._raw.info(pair["B"]).shape)

    def transposed(self, name: str) -> bool:
        """Whether ``B @ A`` is the transpose of the base weight's layout (embeddings, ``fan_in_fan_out``)."""
        return "embedding" in self._pairs[name[: -len(".weight")]] or bool(self.adapter_config.get("fan_in_fan_out"))

    def is_embedding(self, name: str) -> bool:
        """Whether the target weight ``name`` is adapted as an embedding (``lora_embedding_A/B``)."""
        return "embedding" in self._pairs[name[: -len(".weight")]]

    def _load(self, name: str) -> torch.Tensor:
        a, b, scale = self.factors(name)
        delta = (b @ a) * scale
        return delta.T.contiguous() if self.transposed(name) else delta

    def close(self) -> None:
        self._raw.close()


def _pattern_value(patterns: dict[str, float], module: str, default: float) -> float:
    for key, value in patterns.items():
        if re.fullmatch(rf"(.*\.)?{key}", module):
            return value
    return default
