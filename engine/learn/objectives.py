"""What the learners minimise, per task: the supervised loss of a task's outputs, and their entropy.

A classification task's outputs are logits [n, classes]: the loss is the cross-entropy against the
labels, the entropy that of the softmax (AdaMerging's and Concrete's test-time objective). A task whose
outputs are something else says so through optional methods (``engine.evaluation.tasks``):
``training_loss(outputs, labels)`` and ``prediction_entropy(outputs, inputs)`` — a language-model task
scores next tokens over real tokens only, a multiple-choice task its choices' log-likelihoods. A task
with ``learnable = False`` (generation: its outputs are chosen tokens) is refused before any step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.errors import EngineInputError
from engine.evaluation.metrics import softmax_entropy
from engine.evaluation.tasks import Task


def require_learnable(task: Task) -> None:
    """Refuse a task whose outputs nothing can be learned through (``learnable = False``), naming it."""
    if not getattr(task, "learnable", True):
        raise EngineInputError(f"task '{task.name}' generates text: its outputs are chosen tokens, through which "
                               "nothing can be learned; learn on a text-perplexity or multiple-choice task of the "
                               "same domain instead")


def task_loss(task: Task, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The task's differentiable loss of ``outputs`` (``task.forward``) against ``labels``."""
    own = getattr(task, "training_loss", None)
    return own(outputs, labels) if callable(own) else F.cross_entropy(outputs.float(), labels)


def task_entropy(task: Task, outputs: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """The task's mean prediction entropy of ``outputs`` (``task.forward`` of ``inputs``)."""
    own = getattr(task, "prediction_entropy", None)
    return own(outputs, inputs) if callable(own) else softmax_entropy(outputs).mean()
