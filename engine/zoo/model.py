"""The zoo's network: a residual-MLP backbone shared by all tasks and one fixed prototype head per task.

Tensor names (what merging sees): ``backbone.embed.{weight,bias}``, then per block ``i``
``backbone.layers.{i}.norm.{weight,bias}``, ``backbone.layers.{i}.fc1.{weight,bias}``,
``backbone.layers.{i}.fc2.{weight,bias}``, and ``backbone.norm.{weight,bias}``. A head holds
``head.weight`` (one unit-norm prototype per class) and ``head.scale`` (the logit scale); like CLIP's
zero-shot heads in the merging papers it is computed once from the pre-trained backbone and kept
frozen while an expert fine-tunes, so the experts differ only in the backbone and merging acts there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class BackboneConfig:
    """Shape of the backbone: input side (pixels), feature width, hidden width of each block, depth."""

    side: int = 16
    width: int = 128
    hidden: int = 256
    depth: int = 6

    def to_json(self) -> dict[str, int]:
        return asdict(self)


class Block(nn.Module):
    """Pre-norm residual MLP block: x + fc2(gelu(fc1(norm(x))))."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


class Backbone(nn.Module):
    """Images [n, side, side] in [0, 1] → features [n, width]."""

    def __init__(self, config: BackboneConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Linear(config.side * config.side, config.width)
        self.layers = nn.ModuleList(Block(config.width, config.hidden) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.width)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.embed((images.flatten(1) - 0.5) * 2)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


class PrototypeHead(nn.Module):
    """Cosine-similarity classifier: logits = scale · normalize(features) · prototypesᵀ."""

    def __init__(self, num_classes: int, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_classes, width), requires_grad=False)
        self.scale = nn.Parameter(torch.ones(()), requires_grad=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(features, dim=-1) @ self.weight.T


class Classifier(nn.Module):
    """A backbone with one task's head; its state dict is the backbone's tensors plus ``head.*``."""

    def __init__(self, config: BackboneConfig, num_classes: int):
        super().__init__()
        self.backbone = Backbone(config)
        self.head = PrototypeHead(num_classes, config.width)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


def prototypes(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Unit-norm mean of the normalized features of each class: the head's ``weight``."""
    unit = F.normalize(features, dim=-1)
    sums = torch.zeros(num_classes, unit.shape[1]).index_add_(0, labels, unit)
    return F.normalize(sums, dim=-1)
