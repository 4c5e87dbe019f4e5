"""What each node of a recipe outputs: its tensors' names, shapes and dtypes, known before any is read.

A checkpoint outputs its file's tensors. A node kind that ``renames`` (the layer stack) plans a table of
its own from its inputs' tables. Every other node follows its reference (``reference_checkpoint``: its
base, else its first full-model input, stopping at a checkpoint or a renaming node), whose table it
shares. The executor plans outputs and streams from these tables; validation compares them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping

from engine.checkpoints import Checkpoint, TensorInfo, layer_index, num_layers
from engine.errors import EngineInputError

if TYPE_CHECKING:
    from engine.graph.recipe import Recipe


class TensorTable:
    """The tensors one node outputs, in output order; ``info`` reads each tensor's header facts when asked
    (so a table follows a checkpoint view whose shapes a vocabulary alignment sets later).

    ``path`` names it in messages; ``kind`` is model or delta; ``layers`` gives, for each numbered
    output layer, the checkpoint node and the layer index there it comes from (what a saved config's
    per-layer settings follow); ``files_from`` is the checkpoint node whose config and tokenizer files
    describe the output; ``sources`` (renaming nodes only) maps each output name to the input node and
    the name there that gives its value.
    """

    def __init__(self, path: str, kind: str, names: list[str], info: Callable[[str], TensorInfo],
                 layers: list[tuple[str, int]], files_from: str | None,
                 sources: Mapping[str, tuple[str, str]] | None = None):
        self.path = path
        self.kind = kind
        self.names = list(names)
        self._known = set(self.names)
        self._info = info
        self.layers = layers
        self.files_from = files_from
        self.sources = dict(sources or {})
        self._by_layer: list[list[str]] | None = None

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def renamed(self) -> bool:
        """Whether the names are a renaming node's own (not a checkpoint's)."""
        return bool(self.sources)

    def info(self, name: str) -> TensorInfo:
        if name not in self._known:
            raise EngineInputError(f"tensor '{name}' is not an output of {self.path}", tensor=name)
        return self._info(name)

    def __contains__(self, name: str) -> bool:
        return name in self._known

    def by_layer(self) -> list[list[str]]:
        """The tensor names of each numbered layer, in output order (built once)."""
        if self._by_layer is None:
            self._by_layer = [[] for _ in range(self.num_layers)]
            for name in self.names:
                i = layer_index(name)
                if i is not None and i < self.num_layers:
                    self._by_layer[i].append(name)
        return self._by_layer

    def non_layer(self) -> list[str]:
        """The names outside the numbered layers (embeddings, final norm, LM head…), in output order."""
        return [n for n in self.names if layer_index(n) is None]


def checkpoint_table(node_id: str, ckpt: Checkpoint) -> TensorTable:
    """A checkpoint's tensors as a table (its numbered layers are its own)."""
    names = ckpt.names
    return TensorTable(str(ckpt.path), ckpt.kind, names, ckpt.info,
                       [(node_id, i) for i in range(num_layers(names))], node_id)


class TensorTables:
    """The table of every node of one recipe, each built once. ``origin(node_id)`` gives the node whose
    names a node follows (``reference_checkpoint`` with the caller's memo); ``checkpoints()`` the opened
    checkpoints (asked each time a table is built: a run may swap them for views)."""

    def __init__(self, recipe: "Recipe", checkpoints: Callable[[], Mapping[str, Checkpoint]],
                 origin: Callable[[str], str | None]):
        self.recipe = recipe
        self.checkpoints = checkpoints
        self.origin = origin
        self._tables: dict[str, TensorTable | None] = {}

    def table(self, node_id: str) -> TensorTable | None:
        """The tensors ``node_id`` outputs; None when no full model (or no opened file) is upstream.
        A renaming node whose plan does not fit its inputs raises ``EngineInputError`` naming it."""
        origin = self.origin(node_id)
        if origin is None:
            return None
        if origin not in self._tables:
            kind = self.recipe.nodes[origin].kind
            if kind.renames:
                try:
                    self._tables[origin] = kind.tensor_table(self, origin)
                except EngineInputError as exc:
                    raise EngineInputError(f"node '{origin}' ({kind.label}): {exc}") from exc
            else:
                ckpt = self.checkpoints().get(origin)
                self._tables[origin] = checkpoint_table(origin, ckpt) if ckpt is not None else None
        return self._tables[origin]
