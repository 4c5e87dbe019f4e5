"""A live session's resident buffers: the merge node's inputs plus the output the merge is written into.

The inputs are loaded by ``engine.graph.resident_inputs`` (flat fp32 buffers, one span per tensor);
here they gain the *output* buffer, so a tensor of the merged model is a view into it (evaluating it
copies nothing) and a coefficient change that is the same for many neighbouring tensors is one
multiply-add over their joint span. Also: what a session costs in memory and what the device has free.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

import torch

from engine.graph.resident_inputs import ResidentInputs

FP32 = 4
SAFETY = 0.75  # share of the free device memory a live session may fill


@dataclass
class Resident(ResidentInputs):
    """``ResidentInputs`` and the ``out`` buffer (same layout) holding the current merge."""

    out: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.out = torch.zeros_like(self.vectors[0])

    @classmethod
    def holding(cls, inputs: ResidentInputs) -> "Resident":
        """The loaded ``inputs`` (shared, not copied) with a zeroed output buffer."""
        return cls(**{f.name: getattr(inputs, f.name) for f in fields(ResidentInputs)})

    @property
    def nbytes(self) -> int:
        """Bytes held by the anchor, the vectors and the output."""
        return super().nbytes + self.out.numel() * self.out.element_size()

    def state_dict(self, flat: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The merged model (or another flat buffer, e.g. the anchor) as views, in file order."""
        return super().state_dict(self.out if flat is None else flat)


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device`` right now (CPU: the kernel's MemAvailable estimate)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory() - torch.mps.current_allocated_memory())
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def resident_bytes(numel: int, models: int, has_anchor: bool, extra_bytes_per_entry: float = 0.0) -> int:
    """Memory a resident session takes: anchor + vectors + output in fp32, plus a method's caches."""
    return int(numel * (FP32 * (models + 1 + int(has_anchor)) + extra_bytes_per_entry))
