"""Name prefixes between a backbone and its task-head models (``bert.`` in ``BertForSequenceClassification``).

``find_prefix`` detects when two checkpoints' tensor names differ only by a leading prefix;
``PrefixStripped`` shows the sub-model under that prefix with the prefix removed from its names, so that a
recipe can merge task-head models onto their bare backbone (the checkpoint node's ``strip_prefix``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING, Iterable

from engine.checkpoints.base import Checkpoint

if TYPE_CHECKING:
    import torch


def find_prefix(reference: Iterable[str], other: Iterable[str], share: float = 0.9) -> tuple[str, str] | None:
    """``(side, prefix)`` when the names of ``side`` (``"other"`` or ``"reference"``) are the other side's
    names with ``prefix`` in front, for at least ``share`` of those shorter names; else None."""
    ref, oth = set(reference), set(other)
    for side, longer, shorter in (("other", oth, ref), ("reference", ref, oth)):
        heads = Counter(n.split(".", 1)[0] + "." for n in longer - shorter if "." in n)
        for prefix, _count in heads.most_common(3):
            matched = sum(1 for n in shorter if prefix + n in longer)
            if shorter and matched >= share * len(shorter):
                return side, prefix
    return None


class PrefixStripped(Checkpoint):
    """The sub-model of a checkpoint under ``prefix``, its names without the prefix (``bert.encoder.x`` shows
    as ``encoder.x``). Tensors outside the prefix (a task head such as ``classifier.weight``) are left out
    and listed in ``notes``."""

    def __init__(self, inner: Checkpoint, prefix: str):
        super().__init__(inner.path)
        self.inner, self.prefix = inner, prefix
        self.format, self.kind = inner.format, inner.kind
        self.metadata, self.notes = inner.metadata, list(inner.notes)
        outside = [n for n in inner.names if not n.startswith(prefix)]
        if outside:
            self.notes.append(f"{len(outside)} tensor(s) outside '{prefix}' left out, e.g. '{outside[0]}'")
        for name in inner.names:
            if name.startswith(prefix):
                self._infos[name[len(prefix):]] = replace(inner.info(name), name=name[len(prefix):])

    def _load(self, name: str) -> torch.Tensor:
        return self.inner.get(self.prefix + name)

    def close(self) -> None:
        self.inner.close()
