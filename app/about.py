"""Help ▸ About: what this Weightsmith is made of and what it can compute on.

``version_rows()`` lists the versions of Weightsmith, torch (and whether it is a CUDA or CPU build),
Qt/PySide6 and Python, the OS, the compute devices torch sees and the log file; the dialog shows them
with a button that copies them as plain text for a bug report.
"""

from __future__ import annotations

import platform
from pathlib import Path

import PySide6
from PySide6.QtCore import Qt, qVersion
from PySide6.QtGui import QGuiApplication, QPixmap
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QFormLayout, QHBoxLayout, QLabel, QPushButton,
                               QVBoxLayout, QWidget)

import engine
from app.logging_setup import log_file

ICON = Path(__file__).resolve().parent.parent / "resources" / "icons" / "app" / "weightsmith-128.png"


def device_descriptions() -> list[str]:
    """The engine's compute devices, best first, each with the hardware's name where torch knows it."""
    import torch

    from engine.runtime import available_devices

    out = []
    for name in available_devices():
        if name.startswith("cuda"):
            index = int(name.partition(":")[2] or 0)
            props = torch.cuda.get_device_properties(index)
            out.append(f"{name}: {props.name}, {props.total_memory / 2**30:.0f} GiB")
        elif name == "mps":
            out.append("mps: Apple GPU (Metal)")
        else:
            out.append(f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    return out


def version_rows() -> list[tuple[str, str]]:
    """(label, value) pairs: versions, devices and the log file."""
    import torch

    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build"
    log_path = log_file()
    return [
        ("Weightsmith", engine.__version__),
        ("torch", f"{torch.__version__} ({build})"),
        ("Qt", qVersion()),
        ("PySide6", PySide6.__version__),
        ("Python", platform.python_version()),
        ("System", platform.platform()),
        ("Devices", "\n".join(device_descriptions())),
        ("Log file", str(log_path) if log_path else "not written (logging to the terminal)"),
    ]


def as_text(rows: list[tuple[str, str]]) -> str:
    """The rows as ``label: value`` lines (continuation lines indented), for the clipboard."""
    return "\n".join(f"{label}: {value.replace(chr(10), chr(10) + '    ')}" for label, value in rows)


class AboutDialog(QDialog):
    """The About box: logo, one line on what Weightsmith is, the version rows and a Copy button."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("About Weightsmith")
        self.setMinimumWidth(480)
        self.rows = version_rows()
        logo = QLabel()
        logo.setPixmap(QPixmap(str(ICON)).scaled(96, 96, Qt.AspectRatioMode.KeepAspectRatio,
                                                  Qt.TransformationMode.SmoothTransformation))
        title = QLabel(f"<h2>Weightsmith {engine.__version__}</h2>"
                       "<p>A studio for merging neural-network checkpoints.</p>")
        title.setWordWrap(True)
        header = QHBoxLayout()
        header.addWidget(logo, 0, Qt.AlignmentFlag.AlignTop)
        header.addWidget(title, 1)
        form = QFormLayout()
        for label, value in self.rows:
            field = QLabel(value)
            field.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            field.setWordWrap(True)
            form.addRow(f"{label}:", field)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        copy = QPushButton("Copy Versions")
        copy.setToolTip("Copy these lines to the clipboard, for a bug report")
        copy.clicked.connect(self.copy_to_clipboard)
        buttons.addButton(copy, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(header)
        layout.addLayout(form)
        layout.addWidget(buttons)

    def text(self) -> str:
        return as_text(self.rows)

    def copy_to_clipboard(self) -> None:
        QGuiApplication.clipboard().setText(self.text())
