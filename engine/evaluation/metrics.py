"""Classification metrics: accuracy (with its standard error), loss, prediction entropy, normalized
accuracy, and averages across tasks.

``Accumulator`` sums per-batch statistics so a split can be scored batch by batch (and stopped after
the first batches for a quick estimate) without keeping the logits. A task may score differently by
offering ``accumulator()`` (see ``accumulator_for``): language models use ``TokenAccumulator``
(next-token accuracy, token loss, ``perplexity`` = exp(loss)), plugin tasks ``MetricAccumulator``
(their own metric).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn.functional as F

METRICS = ("accuracy", "normalized_accuracy", "loss", "entropy")


@dataclass(frozen=True)
class Scores:
    """Metrics of one model on one task's split. ``n`` counts the scored examples.

    ``accuracy_stderr`` is the binomial standard error √(p(1−p)/n) of the accuracy, treating the
    examples as independent draws.
    """

    n: int
    accuracy: float
    accuracy_stderr: float
    loss: float
    entropy: float

    def to_json(self) -> dict[str, float | int]:
        return {"accuracy": self.accuracy, "accuracy_stderr": self.accuracy_stderr, "loss": self.loss,
                "entropy": self.entropy, "n": self.n}

    @classmethod
    def from_json(cls, data: Mapping[str, float | int]) -> "Scores":
        return cls(int(data["n"]), float(data["accuracy"]), float(data["accuracy_stderr"]),
                   float(data["loss"]), float(data["entropy"]))


class Accumulator:
    """Running sums of correct predictions, cross-entropy and prediction entropy over batches."""

    def __init__(self) -> None:
        self.n = 0
        self.correct = 0
        self.loss_sum = 0.0
        self.entropy_sum = 0.0

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Score one batch: ``logits`` [b, classes], ``labels`` [b] class indices."""
        logits = logits.float()
        log_p = F.log_softmax(logits, dim=-1)
        self.n += int(labels.numel())
        self.correct += int((logits.argmax(-1) == labels).sum())
        self.loss_sum += float(F.nll_loss(log_p, labels, reduction="sum"))
        self.entropy_sum += float(-(log_p.exp() * log_p).sum())

    def result(self) -> Scores:
        """The metrics of everything added so far (NaN when nothing was)."""
        if self.n == 0:
            return Scores(0, math.nan, math.nan, math.nan, math.nan)
        p = self.correct / self.n
        return Scores(self.n, p, math.sqrt(p * (1 - p) / self.n), self.loss_sum / self.n, self.entropy_sum / self.n)


def normalized_accuracy(accuracy: float, expert_accuracy: float | None) -> float | None:
    """A merged model's accuracy divided by the task's own fine-tuned expert's (None without an expert)."""
    if expert_accuracy is None or not expert_accuracy > 0:
        return None
    return accuracy / expert_accuracy


def average(per_task: Mapping[str, Mapping[str, float | None]], metrics: Iterable[str] = METRICS) -> dict[str, float]:
    """The unweighted mean over tasks of each metric that every task has a value for."""
    out: dict[str, float] = {}
    if not per_task:
        return out
    for metric in metrics:
        values = [row.get(metric) for row in per_task.values()]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[metric] = sum(values) / len(values)  # type: ignore[arg-type]
    return out


IGNORE_INDEX = -100


class TokenAccumulator(Accumulator):
    """Next-token prediction of a causal language model: ``logits`` [b, L, vocab] of the input ids
    ``labels`` [b, L]; position i predicts token i + 1, and targets equal to ``IGNORE_INDEX`` are
    skipped. ``accuracy`` is next-token accuracy, ``loss`` the mean negative log-likelihood per token
    (``perplexity(loss)`` the perplexity), ``entropy`` the mean predictive entropy; ``n`` counts tokens."""

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        flat = logits[:, :-1].reshape(-1, logits.shape[-1])
        targets = labels[:, 1:].reshape(-1)
        keep = targets != IGNORE_INDEX
        super().add(flat[keep], targets[keep])


def perplexity(loss: float) -> float:
    """Perplexity of a mean per-token negative log-likelihood (nats)."""
    return math.exp(loss) if math.isfinite(loss) else math.nan


class MetricAccumulator:
    """Scores with a task's own ``metric(outputs, labels) -> number`` per batch, reported as ``accuracy``
    (the mean over examples, each batch weighted by its size). ``loss`` and ``entropy`` are filled as
    for classification when the outputs are [b, classes] logits and the labels class indices, else NaN."""

    def __init__(self, metric: Callable[[torch.Tensor, torch.Tensor], Any]):
        self.metric = metric
        self.n = 0
        self.total = 0.0
        self.classification = Accumulator()

    def add(self, outputs: torch.Tensor, labels: torch.Tensor) -> None:
        self.n += len(labels)
        self.total += float(self.metric(outputs, labels)) * len(labels)
        if (outputs.dim() == 2 and outputs.is_floating_point() and labels.dim() == 1 and not labels.is_floating_point()
                and len(labels) and 0 <= int(labels.min()) and int(labels.max()) < outputs.shape[1]):
            self.classification.add(outputs, labels)

    def result(self) -> Scores:
        if self.n == 0:
            return Scores(0, math.nan, math.nan, math.nan, math.nan)
        value = self.total / self.n
        stderr = math.sqrt(value * (1 - value) / self.n) if 0.0 <= value <= 1.0 else math.nan
        other = self.classification.result()
        return Scores(self.n, value, stderr, other.loss, other.entropy)


def accumulator_for(task: Any) -> Accumulator | MetricAccumulator:
    """The scorer of ``task``: its ``accumulator()`` when it has one, else classification's ``Accumulator``."""
    factory = getattr(task, "accumulator", None)
    return factory() if callable(factory) else Accumulator()
