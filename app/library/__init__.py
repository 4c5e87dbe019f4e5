"""The checkpoint library: inspected checkpoints, their details and their fit to a chosen base."""

from app.library.model import CHECKPOINT_MIME, LibraryEntry, LibraryModel, checkpoint_mime
from app.library.view import LibraryPanel

__all__ = ["CHECKPOINT_MIME", "LibraryEntry", "LibraryModel", "LibraryPanel", "checkpoint_mime"]
