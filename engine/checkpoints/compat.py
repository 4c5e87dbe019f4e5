"""Compatibility between checkpoints: missing, extra and shape-mismatched tensors, by name.

Vocabulary tensors (embeddings, LM heads) that differ only in rows are a grown vocabulary, merged by
token (``engine.checkpoints.vocab``) when both folders hold tokenizer files, and not a mismatch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.checkpoints.base import Checkpoint
from engine.checkpoints.prefix import find_prefix
from engine.checkpoints.vocab import VOCAB_NAME, added_tokens, is_vocab_difference, same_tokens
from engine.errors import EngineInputError


@dataclass
class CompatReport:
    """How ``other`` fits ``reference``. A delta checkpoint (LoRA) may cover a subset of the names."""

    reference: str
    other: str
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    shape_mismatch: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    dtype_differs: list[str] = field(default_factory=list)
    prefix: tuple[str, str] | None = None  # (side, prefix) when the names differ only by a leading prefix
    vocabulary: str = ""  # the vocabularies differ (in rows of the embeddings), merged by token

    @property
    def compatible(self) -> bool:
        return not (self.missing or self.extra or self.shape_mismatch)

    def reason(self, limit: int = 3) -> str:
        """One readable sentence on why the two do not fit (empty when they do)."""
        parts = [self.vocabulary] if self.vocabulary and not self.compatible else []
        if self.shape_mismatch:
            n, a, b = self.shape_mismatch[0]
            parts.append(f"{len(self.shape_mismatch)} tensor(s) differ in shape, e.g. '{n}' is "
                         f"{list(a)} in {self.reference} but {list(b)} in {self.other}")
        if self.missing:
            parts.append(f"{len(self.missing)} tensor(s) missing from {self.other}: "
                         + ", ".join(f"'{n}'" for n in self.missing[:limit]) + (" …" if len(self.missing) > limit else ""))
        if self.extra:
            parts.append(f"{len(self.extra)} extra tensor(s) in {self.other}: "
                         + ", ".join(f"'{n}'" for n in self.extra[:limit]) + (" …" if len(self.extra) > limit else ""))
        if self.prefix is not None:
            side, prefix = self.prefix
            holder = self.other if side == "other" else self.reference
            parts.append(f"the names differ only by the prefix '{prefix}' of {holder}: set strip_prefix "
                         f"'{prefix}' on its checkpoint node to map them")
        return "; ".join(parts)

    def to_json(self) -> dict:
        return {"reference": self.reference, "other": self.other, "compatible": self.compatible,
                "missing": self.missing, "extra": self.extra,
                "shape_mismatch": [[n, list(a), list(b)] for n, a, b in self.shape_mismatch],
                "dtype_differs": self.dtype_differs, "reason": self.reason(),
                "prefix": list(self.prefix) if self.prefix else None, "vocabulary": self.vocabulary}


def compare(reference: Checkpoint, other: Checkpoint) -> CompatReport:
    """Compare ``other`` against ``reference`` tensor by tensor (headers only)."""
    report = CompatReport(str(reference.path), str(other.path))
    ref_names, other_names = set(reference.names), set(other.names)
    if other.kind != "delta":
        report.missing = [n for n in reference.names if n not in other_names]
    report.extra = [n for n in other.names if n not in ref_names]
    for n in reference.names:
        if n in other_names:
            a, b = reference.info(n), other.info(n)
            if a.shape != b.shape:
                report.shape_mismatch.append((n, a.shape, b.shape))
            elif a.dtype_name != b.dtype_name:
                report.dtype_differs.append(n)
    vocab = [m for m in report.shape_mismatch if is_vocab_difference(*m)]
    on_disk = Path(reference.path).exists() and Path(other.path).exists()  # not a planned table (layer stack)
    if other.kind == "model" and on_disk and (vocab or _reorders_tokens(reference, other)):
        _vocabulary_note(report, reference, other, vocab)
    if report.missing or report.extra:
        report.prefix = find_prefix(reference.names, other.names)
    return report


def _reorders_tokens(reference: Checkpoint, other: Checkpoint) -> bool:
    """Embeddings of equal rows whose tokenizers put other tokens at some ids (unreadable: no)."""
    if not any(VOCAB_NAME.search(n) for n in reference.names):
        return False
    try:
        return not same_tokens(reference, other)
    except EngineInputError:
        return False


def _vocabulary_note(report: CompatReport, reference: Checkpoint, other: Checkpoint, vocab: list) -> None:
    """Say how the vocabularies differ; with both tokenizers at hand the rows merge by token, so those
    tensors no longer count as mismatched."""
    try:
        counts = added_tokens(reference, other)
    except EngineInputError as exc:
        report.vocabulary = f"the vocabularies differ in rows and a tokenizer cannot be read: {exc}"
        return
    if counts is None:
        name, a, b = vocab[0]
        report.vocabulary = (f"the vocabularies differ ('{name}' has {a[0]} rows in {report.reference} but {b[0]} in "
                             f"{report.other}) and not both folders hold tokenizer files to align the rows by token")
        return
    grown = [f"{n} added token{'s' if n != 1 else ''} in {where}" for n, where in
             ((counts[0], report.other), (counts[1], report.reference)) if n]
    report.vocabulary = f"vocabulary differs: {', '.join(grown) or 'the same tokens at other ids'}; merged by token"
    report.shape_mismatch = [m for m in report.shape_mismatch if m not in vocab]
