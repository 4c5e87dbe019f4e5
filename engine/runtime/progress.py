"""Progress reports (tensors and bytes done, ETA) and cooperative cancellation tokens."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from engine.errors import Cancelled


class CancelToken:
    """A thread-safe flag a run polls between tensors; ``raise_if_cancelled`` raises Cancelled."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled by the user")


@dataclass(frozen=True)
class Progress:
    """One progress report of a run phase."""

    phase: str
    done: int
    total: int
    bytes_done: int = 0
    bytes_total: int = 0
    elapsed_s: float = 0.0
    message: str = ""

    @property
    def fraction(self) -> float:
        if self.bytes_total:
            return min(1.0, self.bytes_done / self.bytes_total)
        return min(1.0, self.done / self.total) if self.total else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the average rate so far, or None before there is a rate."""
        f = self.fraction
        if f <= 0 or self.elapsed_s <= 0:
            return None
        return self.elapsed_s * (1 - f) / f


ProgressCallback = Callable[[Progress], None]


class ProgressTracker:
    """Counts work done in one phase and forwards reports to a callback, at most every ``interval_s``."""

    def __init__(self, callback: ProgressCallback | None, phase: str, total: int, bytes_total: int = 0,
                 interval_s: float = 0.05):
        self.callback = callback
        self.phase = phase
        self.total = total
        self.bytes_total = bytes_total
        self.done = 0
        self.bytes_done = 0
        self.interval_s = interval_s
        self._start = time.perf_counter()
        self._last = 0.0

    def advance(self, n: int = 1, nbytes: int = 0, message: str = "") -> None:
        self.done += n
        self.bytes_done += nbytes
        now = time.perf_counter()
        if self.callback and (now - self._last >= self.interval_s or self.done >= self.total):
            self._last = now
            self.callback(self.report(message))

    def report(self, message: str = "") -> Progress:
        return Progress(self.phase, self.done, self.total, self.bytes_done, self.bytes_total,
                        time.perf_counter() - self._start, message)
