"""Training loops of the zoo build: pre-training the backbone, fitting heads, fine-tuning experts.

Mini-batch AdamW with a cosine schedule and warm-up, single process, on the CPU by
default. ``step_callback`` is called after each optimizer step (progress + cancellation live there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.zoo.model import Backbone, Classifier, prototypes


@dataclass(frozen=True)
class Schedule:
    """Optimizer settings of one training phase."""

    steps: int
    lr: float
    batch: int = 128
    weight_decay: float = 0.0
    warmup: int = 20

    def lr_at(self, step: int) -> float:
        """Learning rate at ``step``: linear warm-up, then cosine decay to zero."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * 0.5 * (1 + math.cos(math.pi * progress))


StepCallback = Callable[[], None]


def _fit(module: nn.Module, params: list[nn.Parameter], forward: Callable[[torch.Tensor], torch.Tensor],
         x: torch.Tensor, y: torch.Tensor, schedule: Schedule, seed: int, step_callback: StepCallback) -> None:
    optim = torch.optim.AdamW(params, lr=schedule.lr, weight_decay=schedule.weight_decay)
    order = np.random.default_rng(seed)
    perm, pos = order.permutation(len(y)), 0
    module.train()
    for step in range(schedule.steps):
        if pos + schedule.batch > len(perm):
            perm, pos = order.permutation(len(y)), 0
        idx = torch.from_numpy(perm[pos:pos + schedule.batch])
        pos += schedule.batch
        for group in optim.param_groups:
            group["lr"] = schedule.lr_at(step)
        loss = F.cross_entropy(forward(x[idx]), y[idx])
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        step_callback()
    module.eval()


def pretrain(backbone: Backbone, x: torch.Tensor, y: torch.Tensor, num_classes: int, schedule: Schedule,
             seed: int, step_callback: StepCallback) -> None:
    """Train ``backbone`` in place with a temporary linear classifier (discarded afterwards)."""
    torch.manual_seed(seed)
    probe = nn.Linear(backbone.config.width, num_classes)
    both = nn.ModuleList([backbone, probe])
    _fit(both, list(both.parameters()), lambda images: probe(backbone(images)), x, y, schedule, seed,
         step_callback)


@torch.no_grad()
def fit_head(model: Classifier, x: torch.Tensor, y: torch.Tensor, scale: float) -> None:
    """Set ``model.head`` to the class prototypes of the backbone's features of (x, y)."""
    model.eval()
    features = torch.cat([model.backbone(x[i:i + 1024]) for i in range(0, len(x), 1024)])
    model.head.weight.copy_(prototypes(features, y, model.head.weight.shape[0]))
    model.head.scale.fill_(scale)


def finetune(model: Classifier, x: torch.Tensor, y: torch.Tensor, schedule: Schedule, seed: int,
             step_callback: StepCallback) -> None:
    """Fine-tune the whole backbone in place with the head frozen."""
    torch.manual_seed(seed)
    _fit(model, list(model.backbone.parameters()), model, x, y, schedule, seed, step_callback)
