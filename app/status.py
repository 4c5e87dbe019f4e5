"""The status bar's permanent fields: compute device, memory in use, last run."""

from __future__ import annotations

import os
import sys

import torch
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QHBoxLayout, QLabel, QStatusBar, QWidget

from app import theme
from app.formatting import format_duration, human_bytes
from engine.errors import EngineInputError
from engine.runtime import resolve_device

MEMORY_INTERVAL_MS = 2000


def process_memory() -> int | None:
    """Resident memory of this process in bytes (None where it cannot be read cheaply)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    if sys.platform == "darwin":
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # peak, in bytes on macOS
    return None


def device_label(choice: str) -> str:
    """``CPU``, ``CUDA · NVIDIA H100``, ``MPS`` for a device setting (or why it is unavailable)."""
    try:
        dev = resolve_device(choice)
    except EngineInputError:
        return f"{choice} (not available)"
    if dev.type == "cuda":
        return f"CUDA · {torch.cuda.get_device_name(dev)}"
    return dev.type.upper()


class _Field(QWidget):
    def __init__(self, icon: str, tip: str):
        super().__init__()
        self.setToolTip(tip)
        pic = QLabel()
        pic.setPixmap(theme.icon(icon, "muted").pixmap(14, 14))
        self.label = QLabel()
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 0, 4, 0)
        layout.setSpacing(4)
        layout.addWidget(pic)
        layout.addWidget(self.label)


class StatusFields:
    """Adds the device, memory and last-run fields to ``bar`` and keeps memory up to date."""

    def __init__(self, bar: QStatusBar):
        self.device = _Field("chip", "Compute device for merges (Settings ▸ Device)")
        self.memory = _Field("memory", "Memory used by Weightsmith (and on the GPU, when one is used)")
        self.last_run = _Field("clock", "Duration of the last finished run")
        self.last_run.label.setText("no run yet")
        for f in (self.device, self.memory, self.last_run):
            bar.addPermanentWidget(f)
        self._device_type = "cpu"
        self._timer = QTimer(bar, interval=MEMORY_INTERVAL_MS)
        self._timer.timeout.connect(self.update_memory)
        self._timer.start()
        self.update_memory()

    def set_device(self, choice: str) -> None:
        self.device.label.setText(device_label(choice))
        try:
            self._device_type = resolve_device(choice).type
        except EngineInputError:
            self._device_type = "cpu"
        self.update_memory()

    def set_last_run(self, seconds: float, what: str = "merge") -> None:
        self.last_run.label.setText(f"last {what} {format_duration(seconds)}")

    def update_memory(self) -> None:
        parts = []
        rss = process_memory()
        if rss is not None:
            parts.append(f"RAM {human_bytes(rss)}")
        if self._device_type == "cuda" and torch.cuda.is_available():
            parts.append(f"GPU {human_bytes(torch.cuda.memory_allocated())}")
        self.memory.label.setText(" · ".join(parts) or "memory n/a")
