"""Copied graph fragments on the system clipboard: ``{"nodes": [...], "edges": [...]}`` as JSON."""

from __future__ import annotations

import atexit
import json
from typing import Any

from PySide6.QtCore import QMimeData
from PySide6.QtGui import QGuiApplication

NODES_MIME = "application/x-weightsmith-nodes"


def put_nodes(data: dict[str, Any]) -> None:
    """Place a fragment from ``GraphScene.copy_selected`` on the clipboard (also as plain JSON text)."""
    text = json.dumps(data, indent=2)
    mime = QMimeData()
    mime.setData(NODES_MIME, text.encode("utf-8"))
    mime.setText(text)
    QGuiApplication.clipboard().setMimeData(mime)


def _release() -> None:
    """Drop our fragment from the clipboard before the interpreter shuts down: PySide6 crashes when
    QClipboard deletes Python-created mime data during finalization (seen with 6.12)."""
    app = QGuiApplication.instance()
    if app is not None and app.clipboard().mimeData() is not None and app.clipboard().mimeData().hasFormat(NODES_MIME):
        app.clipboard().clear()


def get_nodes() -> dict[str, Any] | None:
    """The fragment on the clipboard, or None when it holds something else."""
    mime = QGuiApplication.clipboard().mimeData()
    if mime is None or not mime.hasFormat(NODES_MIME):
        return None
    try:
        data = json.loads(bytes(mime.data(NODES_MIME).data()).decode("utf-8"))
    except ValueError:
        return None
    return data if isinstance(data, dict) and isinstance(data.get("nodes"), list) else None


atexit.register(_release)
