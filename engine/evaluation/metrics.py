"""Metrics with a direction: accuracy (with its standard error), loss, prediction entropy, perplexity,
multiple-choice and generation scores, normalized scores, and averages across tasks.

Every metric has a direction (``METRICS``: name → ``Metric`` with ``higher_is_better``); a plugin's own
metric declares its own. ``Scores`` holds only the metrics that apply and came out finite: a metric
that does not apply is ``None`` in Python and absent from the JSON, never NaN, and a value that came
out NaN or infinite (a diverged model's loss) is dropped with a note saying so. ``Scores.to_json()``
writes each metric flat (``"perplexity": 12.3``) and in a ``metrics`` block with its direction::

    "metrics": {"perplexity": {"value": 12.3, "higher_is_better": false}, …}, "primary": "perplexity"

``primary`` is the task's headline metric: the one ``normalized_score`` compares with the task's
expert, oriented so that higher is always better — merged ÷ expert for a higher-is-better metric,
expert ÷ merged for a lower-is-better one (perplexity, loss), so 1.0 means "as good as the expert".

Accumulators sum per-batch statistics so a split can be scored batch by batch (and stopped after the
first batches for a quick estimate) without keeping the outputs. A task may score differently by
offering ``accumulator()`` (see ``accumulator_for``): ``TokenAccumulator`` (causal-LM next-token
statistics), ``MetricAccumulator`` (a plugin's own metric), and the accumulators of
``engine.evaluation.lm_tasks`` (multiple choice, generation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping

import torch


@dataclass(frozen=True)
class Metric:
    """A metric the engine reports: its name, its direction and what it measures."""

    name: str
    higher_is_better: bool
    help: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "higher_is_better": self.higher_is_better, "help": self.help}


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("accuracy", True, "fraction of examples right (next-token accuracy for text perplexity, the declared "
                             "match for generation)"),
    Metric("normalized_accuracy", True, "accuracy divided by the task's own expert's accuracy"),
    Metric("normalized_score", True, "the primary metric against the task's expert, higher is better: merged / expert, "
                                     "or expert / merged for a lower-is-better metric"),
    Metric("loss", False, "mean cross-entropy in nats (per token for language models)"),
    Metric("entropy", False, "mean entropy of the predicted distribution in nats (lower: more confident)"),
    Metric("perplexity", False, "exp(loss per token)"),
    Metric("accuracy_norm", True, "multiple choice: accuracy when each choice's log-likelihood is divided by its "
                                  "length in characters"),
    Metric("exact_match", True, "generation: the output equals a reference"),
    Metric("contains", True, "generation: the output contains a reference"),
    Metric("regex_match", True, "generation: a reference regular expression matches the output"),
)}

AVERAGED = ("accuracy", "normalized_accuracy", "normalized_score", "loss", "entropy", "perplexity")


def higher_is_better(name: str, declared: Mapping[str, bool] | None = None) -> bool:
    """The direction of metric ``name``: ``declared`` first (a plugin's), then ``METRICS``; a metric
    nobody declared counts as higher-is-better (a score)."""
    if declared and name in declared:
        return bool(declared[name])
    known = METRICS.get(name)
    return known.higher_is_better if known is not None else True


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Scores:
    """Metrics of one model on one task's split. ``n`` counts the scored examples (tokens for perplexity).

    ``accuracy_stderr`` is the binomial standard error √(p(1−p)/n) of the accuracy, treating the
    examples as independent draws. ``extra`` holds further metrics by name (``perplexity``,
    ``accuracy_norm``, a plugin's metric), ``stderr`` their standard errors; ``directions`` the
    direction of metrics ``METRICS`` does not know; ``notes`` what the reader should know about the
    run (cut texts, generations that never stopped); ``outputs`` per-example outputs (generated texts).
    """

    n: int
    accuracy: float | None
    accuracy_stderr: float | None = None
    loss: float | None = None
    entropy: float | None = None
    extra: Mapping[str, float] = field(default_factory=dict)
    stderr: Mapping[str, float] = field(default_factory=dict)
    primary: str = "accuracy"
    directions: Mapping[str, bool] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    outputs: tuple[Mapping[str, Any], ...] = ()

    def __post_init__(self) -> None:
        notes = list(self.notes)
        for name in ("accuracy", "accuracy_stderr", "loss", "entropy"):
            value = getattr(self, name)
            if value is not None and not _finite(value):
                if name != "accuracy_stderr":
                    notes.append(f"{name} came out {value} (the model's outputs are not finite); it is left out")
                object.__setattr__(self, name, None)
        bad = [k for k, v in self.extra.items() if not _finite(v)]
        notes += [f"{k} came out {self.extra[k]} (not finite); it is left out" for k in bad]
        object.__setattr__(self, "extra", {k: float(v) for k, v in self.extra.items() if k not in bad})
        object.__setattr__(self, "stderr", {k: float(v) for k, v in self.stderr.items()
                                            if _finite(v) and k in self.extra})
        object.__setattr__(self, "notes", tuple(dict.fromkeys(notes)))

    def value(self, name: str) -> float | None:
        """The value of metric ``name``, or None when it does not apply."""
        if name in ("accuracy", "loss", "entropy"):
            return getattr(self, name)
        return self.extra.get(name)

    def higher_is_better(self, name: str) -> bool:
        """The direction of metric ``name`` (declared by the task, else ``METRICS``)."""
        return higher_is_better(name, self.directions)

    def metrics(self) -> dict[str, float]:
        """Every metric that applies: name → value."""
        out = {k: getattr(self, k) for k in ("accuracy", "loss", "entropy") if getattr(self, k) is not None}
        out.update(self.extra)
        return out

    def to_json(self) -> dict[str, Any]:
        """Flat metric values, ``accuracy_stderr``, ``n``, the ``metrics`` block with directions, ``primary``,
        and ``notes`` / ``outputs`` when there are any. Strict JSON: no NaN anywhere."""
        values = self.metrics()
        out: dict[str, Any] = dict(values)
        if self.accuracy_stderr is not None:
            out["accuracy_stderr"] = self.accuracy_stderr
        out["n"] = self.n
        errors = {"accuracy": self.accuracy_stderr, **self.stderr}
        out["metrics"] = {name: {"value": v, "higher_is_better": self.higher_is_better(name),
                                 **({"stderr": errors[name]} if errors.get(name) is not None else {})}
                          for name, v in values.items()}
        out["primary"] = self.primary
        if self.notes:
            out["notes"] = list(self.notes)
        if self.outputs:
            out["outputs"] = [dict(o) for o in self.outputs]
        return out

    def with_notes(self, notes: Iterable[str]) -> "Scores":
        """These scores with ``notes`` put first."""
        return replace(self, notes=(*notes, *self.notes))


def binomial_stderr(p: float, n: int) -> float:
    """√(p(1−p)/n): the standard error of a proportion over ``n`` independent examples."""
    return math.sqrt(p * (1 - p) / n)


IGNORE_INDEX = -100
CHUNK_ELEMENTS = 1 << 18  # logits per scoring chunk on the CPU: 1 MiB of float32, which stays in cache


class Accumulator:
    """Running sums of correct predictions, cross-entropy and prediction entropy over batches."""

    def __init__(self) -> None:
        self.n = 0
        self.correct = 0
        self.loss_sum = 0.0
        self.entropy_sum = 0.0

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Score one batch: ``logits`` [b, classes], ``labels`` [b] class indices (rows whose label is
        ``IGNORE_INDEX`` are skipped). On the CPU rows are scored in chunks of about ``CHUNK_ELEMENTS``
        logits (at least 64 rows), so the softmax, argmax and entropy passes run in cache."""
        keep = labels != IGNORE_INDEX
        if not bool(keep.all()):
            logits, labels = logits[keep], labels[keep]
        self.n += int(labels.numel())
        rows = len(labels) if logits.is_cuda else max(64, CHUNK_ELEMENTS // max(1, logits.shape[-1]))
        correct, loss, entropy = (logits.new_zeros((), dtype=torch.float64) for _ in range(3))
        for start in range(0, len(labels), rows):
            chunk, target = logits[start:start + rows].float(), labels[start:start + rows]
            p = torch.softmax(chunk, dim=-1)
            top = chunk.argmax(-1, keepdim=True)
            correct += (top.squeeze(1) == target).sum()
            # the log-sum-exp read off the top logit, whose probability (≥ 1/classes) never underflows;
            # the loss −ln p_t = lse − z_t; the entropy −Σ p·ln p = lse − Σ p·z (no 0·(−inf) to mask)
            lse = (chunk.gather(1, top) - p.gather(1, top).log()).squeeze(1)
            loss += (lse - chunk.gather(1, target[:, None]).squeeze(1)).sum()
            entropy += (lse - torch.linalg.vecdot(p, chunk)).sum()
        self.correct += int(correct)
        self.loss_sum += float(loss)
        self.entropy_sum += float(entropy)

    def result(self) -> Scores:
        """The metrics of everything added so far (none when nothing was)."""
        if self.n == 0:
            return Scores(0, None)
        p = self.correct / self.n
        return Scores(self.n, p, binomial_stderr(p, self.n), self.loss_sum / self.n, self.entropy_sum / self.n)


def normalized_accuracy(accuracy: float | None, expert_accuracy: float | None) -> float | None:
    """A merged model's accuracy divided by the task's own fine-tuned expert's (None without an expert)."""
    if accuracy is None or expert_accuracy is None or not expert_accuracy > 0:
        return None
    return accuracy / expert_accuracy


def normalized_score(value: float | None, reference: float | None, higher_better: bool) -> float | None:
    """A model's metric against the reference's (the task's expert), oriented so that higher is better:
    ``value / reference`` for a higher-is-better metric, ``reference / value`` for a lower-is-better one.
    None when either is missing or the divisor is not positive."""
    if value is None or reference is None:
        return None
    top, bottom = (value, reference) if higher_better else (reference, value)
    return top / bottom if bottom > 0 else None


def average(per_task: Mapping[str, Mapping[str, Any]], metrics: Iterable[str] = AVERAGED) -> dict[str, float]:
    """The unweighted mean over tasks of each metric that every task has a value for."""
    out: dict[str, float] = {}
    if not per_task:
        return out
    for metric in metrics:
        values = [row.get(metric) for row in per_task.values()]
        if all(_finite(v) for v in values):
            out[metric] = sum(values) / len(values)
    return out


class TokenAccumulator(Accumulator):
    """Next-token prediction of a causal language model: ``logits`` [b, L, vocab] of the input ids
    ``labels`` [b, L]; position i predicts token i + 1, and targets equal to ``IGNORE_INDEX`` are
    skipped. ``accuracy`` is next-token accuracy, ``loss`` the mean negative log-likelihood per token,
    ``perplexity`` its exponential (the primary metric), ``entropy`` the mean predictive entropy;
    ``n`` counts the scored tokens."""

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """``logits`` [b, L, vocab] for the whole block, or [b, L − 1, vocab] when the task fed the model
        every token but the last (which predicts nothing scored): then no copy of the logits is made."""
        if logits.shape[1] == labels.shape[1]:
            logits = logits[:, :-1]
        super().add(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))

    def result(self) -> Scores:
        base = super().result()
        if base.loss is None:
            return replace(base, primary="perplexity")
        return replace(base, extra={"perplexity": perplexity(base.loss)}, primary="perplexity")


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """The Shannon entropy (nats) of the softmax over the last dimension, per row (differentiable); a
    logit of −inf (a choice that does not exist) adds nothing."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    return -torch.where(log_p.isfinite(), log_p.exp() * log_p, 0.0).sum(-1)


def perplexity(loss: float) -> float:
    """Perplexity of a mean per-token negative log-likelihood (nats); inf when it overflows."""
    return math.exp(loss) if loss < 709.0 else math.inf


class MetricAccumulator:
    """Scores with a task's own ``metric(outputs, labels) -> number`` per batch: the mean over examples
    (each batch weighted by its size), reported under ``name`` with the declared direction (the primary
    metric). When the outputs are [b, classes] logits and the labels class indices, classification's
    accuracy, loss and entropy are reported too (a metric named ``accuracy`` replaces the first)."""

    def __init__(self, metric: Callable[[torch.Tensor, torch.Tensor], Any], name: str = "accuracy",
                 higher_better: bool = True):
        self.metric = metric
        self.name = name
        self.higher_better = higher_better
        self.n = 0
        self.total = 0.0
        self.classification = Accumulator()
        self.all_logits = True

    def add(self, outputs: torch.Tensor, labels: torch.Tensor) -> None:
        self.n += len(labels)
        self.total += float(self.metric(outputs, labels)) * len(labels)
        logits = (outputs.dim() == 2 and outputs.is_floating_point() and labels.dim() == 1
                  and not labels.is_floating_point() and len(labels) > 0
                  and 0 <= int(labels.min()) and int(labels.max()) < outputs.shape[1])
        self.all_logits = self.all_logits and logits
        if logits:
            self.classification.add(outputs, labels)

    def result(self) -> Scores:
        if self.n == 0:
            return Scores(0, None, primary=self.name)
        value = self.total / self.n
        other = self.classification.result() if self.all_logits else Scores(0, None)
        directions = {self.name: self.higher_better}
        if self.name == "accuracy":
            stderr = binomial_stderr(value, self.n) if 0.0 <= value <= 1.0 else None
            return Scores(self.n, value, stderr, other.loss, other.entropy, directions=directions)
        return Scores(self.n, other.accuracy, other.accuracy_stderr, other.loss, other.entropy,
                      extra={self.name: value}, primary=self.name, directions=directions)


def accumulator_for(task: Any) -> Any:
    """The scorer of ``task``: its ``accumulator()`` when it has one, else classification's ``Accumulator``."""
    factory = getattr(task, "accumulator", None)
    return factory() if callable(factory) else Accumulator()
