"""The merge-graph editor: a scene mirroring the engine's Recipe, its view, and the node palette."""

from app.graph.palette import NODE_MIME, NodePalette, PaletteEntry, PalettePopup, default_params, switch_method_params
from app.graph.scene import CHECKPOINT_MIME, GraphScene
from app.graph.view import GraphView

__all__ = [
    "CHECKPOINT_MIME", "NODE_MIME", "GraphScene", "GraphView", "NodePalette", "PaletteEntry", "PalettePopup",
    "default_params", "switch_method_params",
]
