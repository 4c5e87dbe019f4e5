"""One streaming pass feeding several analyses.

An analysis is an object with ``observe(td: TensorDeltas)`` and ``result()``; ``run`` walks a source
once and hands every tensor to every analysis, so the views that need several statistics read the
checkpoints a single time.
"""

from __future__ import annotations

from typing import Any, Iterable, Protocol, Sequence

from engine.analysis.source import TensorDeltas
from engine.runtime import CancelToken


class Analysis(Protocol):
    def observe(self, td: TensorDeltas) -> None:
        """See one tensor's base and task vectors."""

    def result(self) -> Any:
        """The finished statistic."""


def run(source: Iterable[TensorDeltas], analyses: Sequence[Analysis], cancel: CancelToken | None = None) -> list[Any]:
    """Feed every tensor of ``source`` to every analysis; their results, in order."""
    for td in source:
        if cancel is not None:
            cancel.raise_if_cancelled()
        for a in analyses:
            a.observe(td)
    return [a.result() for a in analyses]
