"""The Settings dialog: compute device, output dtype, default output folder, theme."""

from __future__ import annotations

import copy

from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel,
                               QLineEdit, QToolButton, QVBoxLayout, QWidget)

from app import theme
from app.settings import SAVE_DTYPES, THEMES, Settings
from engine.runtime import available_devices


class SettingsDialog(QDialog):
    """Edits a copy of the settings; ``result_settings()`` gives it back after OK."""

    def __init__(self, settings: Settings, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self._settings = copy.deepcopy(settings)
        self.device = QComboBox()
        self.device.addItem("Automatic (best available)", "auto")
        for dev in available_devices():
            self.device.addItem(dev.upper() if dev in ("cpu", "mps") else dev, dev)
        self._select(self.device, settings.device)
        self.dtype = QComboBox()
        for d in SAVE_DTYPES:
            self.dtype.addItem("keep each tensor's dtype" if d == "auto" else d, d)
        self._select(self.dtype, settings.save_dtype)
        self.output = QLineEdit(settings.output_dir)
        browse = QToolButton(toolTip="Choose a folder")
        browse.setIcon(theme.icon("open"))
        browse.clicked.connect(self._browse)
        out_row = QHBoxLayout()
        out_row.addWidget(self.output, 1)
        out_row.addWidget(browse)
        self.theme = QComboBox()
        for t in THEMES:
            self.theme.addItem(t.capitalize(), t)
        self._select(self.theme, settings.theme)
        form = QFormLayout()
        form.addRow("Compute device", self.device)
        form.addRow("Output dtype for new Save nodes", self.dtype)
        form.addRow("Default output folder", out_row)
        form.addRow("Theme", self.theme)
        note = QLabel("Merges stream one tensor at a time, so the device needs little memory.", objectName="Hint")
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(note)
        layout.addWidget(buttons)

    @staticmethod
    def _select(combo: QComboBox, value: str) -> None:
        i = combo.findData(value)
        combo.setCurrentIndex(max(0, i))

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Default output folder", self.output.text())
        if folder:
            self.output.setText(folder)

    def result_settings(self) -> Settings:
        s = self._settings
        s.device = self.device.currentData()
        s.save_dtype = self.dtype.currentData()
        s.output_dir = self.output.text().strip() or s.output_dir
        s.theme = self.theme.currentData()
        return s
