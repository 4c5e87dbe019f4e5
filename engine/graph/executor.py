"""The streaming executor: computes a recipe one tensor name at a time.

For each name it loads only the input tensors that name needs (reader threads fetch the next name's
tensors while the current one computes), moves them to the compute device, evaluates the graph for that
name in fp32, hands the result to the writer (or to the in-memory state dict of ``materialize``) and
frees everything. Merge methods that need whole-model statistics get them from streaming passes first.
Peak memory is about two tensors per input model, whatever the models' count and size.
"""

from __future__ import annotations

import json
import logging
import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch

import engine
from engine.checkpoints import Checkpoint, CheckpointWriter, TensorInfo, layer_index, num_layers
from engine.checkpoints.vocab import TOKENIZER_FILES, VocabAlignment, needs_alignment, plan_vocabulary
from engine.errors import CheckpointError, EngineInputError
from engine.graph.node_kinds import DELTA, MODEL, SAVE, ModelScorer, node_kind, nodes_of, sink_ids
from engine.graph.recipe import Recipe
from engine.graph.stacking import restack_config
from engine.graph.tensor_tables import TensorTable, TensorTables
from engine.graph.statistics_files import StatisticsFiles
from engine.graph.validate import open_checkpoints, output_kinds, reference_checkpoint, require_valid, topological_order
from engine.methods import MergeInputs, TensorContext, get_method
from engine.methods.schedule import resolve_params
from engine.runtime import CancelToken, ProgressTracker, parse_dtype, resolve_device
from engine.runtime.progress import ProgressCallback

log = logging.getLogger(__name__)

_CHUNK = 1 << 20  # elements per step of the CPU mixed-dtype accumulation (4 MB of fp32: cache-sized)
_INLINE_READ_ELEMENTS = 1 << 14  # a name with fewer input elements is read at once: a thread hand-off costs more

COPIED_FILES = (
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "tokenizer.model", "vocab.json", "vocab.txt", "merges.txt", "added_tokens.json", "chat_template.jinja",
    "preprocessor_config.json",
)


FP8 = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n))


def refuse_scaled_fp8(ckpt: Checkpoint) -> None:
    """fp8 weights are merged upcast (and saved as bf16 under dtype 'auto'); fp8 weights that come with
    scale tensors are block-quantised, and merging their raw values would be wrong: refuse them by name."""
    if not any(ckpt.info(n).dtype in FP8 for n in ckpt.names):
        return
    scales = [n for n in ckpt.names if n.endswith(("_scale_inv", ".weight_scale", "_scale"))]
    if scales:
        raise EngineInputError(f"fp8 weights with scale tensors (e.g. '{scales[0]}') are quantised; dequantise the "
                               "checkpoint first (merging raw fp8 values would ignore their scales)",
                               path=str(ckpt.path), tensor=scales[0])


@dataclass
class RunOptions:
    """How sinks run: replace existing outputs (``force``); which split, how many quick batches and
    which input models (None = all) Evaluate nodes score."""

    force: bool = False
    split: str | None = None
    quick: int | None = None
    models: frozenset[str] | None = None


@dataclass
class RunResult:
    """What a run produced: output folders by Save node id, evaluation runs (one per model an Evaluate
    node scored), warnings (NaN inputs…), timing and volume."""

    outputs: dict[str, Path] = field(default_factory=dict)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    tensors: int = 0
    bytes_read: int = 0


class GraphRun:
    """One execution of a recipe on a device. Opens the checkpoints (headers only) on creation.

    ``run(sinks)`` runs the recipe's outputs (Save and Evaluate nodes alike); ``scorer`` is the
    evaluation service Evaluate nodes score with (``engine.evaluation`` provides one)."""

    def __init__(self, recipe: Recipe, *, device: str | torch.device = "auto", progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None, compute_dtype: torch.dtype = torch.float32, validate: bool = True,
                 scorer: ModelScorer | None = None):
        if validate:
            require_valid(recipe)
        self.recipe = recipe
        self.scorer = scorer
        self.device = resolve_device(device)
        self.progress = progress
        self.cancel = cancel or CancelToken()
        self.compute_dtype = compute_dtype
        self.checkpoints: dict[str, Checkpoint] = open_checkpoints(recipe)
        for ckpt in self.checkpoints.values():
            refuse_scaled_fp8(ckpt)
        self.vocabulary = self._vocabulary_views()
        self.kinds = output_kinds(recipe, self.checkpoints)
        self.order = topological_order(recipe)
        self.result = RunResult()
        self._stats: dict[str, Any] = {}
        self._memo: dict[tuple[str, ...], torch.Tensor | None] = {}  # (node, name) → value, for the current name
        self._loaded: dict[tuple[str, str], torch.Tensor] = {}  # (checkpoint, name) → tensor read for it
        self._out_buffers: dict[tuple[str, int], torch.Tensor] = {}
        self._scratch: torch.Tensor | None = None
        self._index = recipe.index()
        self._references: dict[str, str | None] = {}
        self._layer_counts: dict[str, int] = {}
        self.tables = TensorTables(recipe, lambda: self.checkpoints, self.reference_id)
        self._renames = any(node_kind(n.type).renames for n in recipe.nodes.values())
        self._buffer_names: dict[str, list[str]] = {}  # node → the names its reused buffers hold for this step
        self._dependencies: dict[str, list[str]] = {}
        self._statistics_files = StatisticsFiles()  # a merge's statistics file, opened on first use
        self.task_views: dict[str, int] = {}  # merge node → input whose own model it outputs (methods with task parts)
        self.reuse_buffers = True  # off while materialising, whose results must outlive the name
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(8, len(self.checkpoints))), thread_name_prefix="ws-read")
        self._vocabulary_key: tuple[str, str] | None = None
        if self.vocabulary is not None:  # planned for the first Save node, else the first merge's base
            saves = nodes_of(self.recipe, SAVE)
            first = saves[0] if saves else next((n for n in self.order if not node_kind(self.recipe.nodes[n].type).source
                                                 and self.reference_id(n) is not None), None)
            if first is not None:
                self._use_vocabulary(self.vocabulary,
                                     self._save_vocabulary(first) if saves else (self.reference_id(first),) * 2)

    # ---- vocabularies ----------------------------------------------------------------------------
    def _vocabulary_views(self) -> VocabAlignment | None:
        """When the models' vocabularies differ or a Save node asks for another tokenizer, the checkpoints
        become views whose embedding / LM-head rows are aligned by token (``engine.checkpoints.vocab``)."""
        if not needs_alignment(self.checkpoints) and all(
                node.params.get("tokenizer_source", "base") == "base" for node in self.recipe.nodes.values()
                if node_kind(node.type) is SAVE):
            return None
        alignment = VocabAlignment(self.checkpoints)
        self.checkpoints = alignment.views
        return alignment

    def _save_vocabulary(self, save_id: str) -> tuple[str, str]:
        """(tokenizer source, base) of a Save node: 'base' is the node its files are copied from (for a
        layer stack, the input its embeddings come from)."""
        params = self.recipe.nodes[save_id].params
        base = self.files_source(self.input(save_id, "model"))
        source = params.get("tokenizer_source") or "base"
        if source == "base":
            files = params.get("copy_files_from")
            source = files if files in self.checkpoints else base
        return source, base

    def _use_vocabulary(self, alignment: VocabAlignment, key: tuple[str, str]) -> None:
        """Align on the vocabulary of ``key`` (source, base); statistics gathered on another are dropped."""
        if key == self._vocabulary_key:
            return
        plan = plan_vocabulary(alignment.raw, key[1], key[0])
        alignment.use(plan)
        self._vocabulary_key = key
        self._stats.clear()
        self.result.warnings.extend(n for n in plan.notes if n not in self.result.warnings)

    # ---- names and shapes ----------------------------------------------------------------------
    def reference(self, node_id: str) -> TensorTable:
        """The tensors a node outputs: its reference checkpoint's, or a layer stack's planned ones
        (``engine.graph.tensor_tables``; each planned once per run)."""
        table = self.tables.table(node_id)
        if table is None:
            raise EngineInputError(f"node '{node_id}' has no full model upstream to take tensor names from")
        return table

    def reference_id(self, node_id: str) -> str | None:
        """``reference_checkpoint`` of a node, remembered for the run."""
        if node_id not in self._references:
            reference_checkpoint(self.recipe, node_id, self.checkpoints, self._references, self._index)
        return self._references[node_id]

    def layer_count(self, node_id: str) -> int:
        """Numbered layers of a node's reference checkpoint (its names are scanned once per run)."""
        if node_id not in self._layer_counts:
            self._layer_counts[node_id] = num_layers(self.reference(node_id).names)
        return self._layer_counts[node_id]

    def tensor_infos(self, node_id: str) -> list[TensorInfo]:
        """The tensors a node outputs (the reference checkpoint's), in file order."""
        ref = self.reference(node_id)
        return [ref.info(n) for n in ref.names]

    def checkpoints_for(self, node_ids: Iterable[str]) -> list[str]:
        """The opened checkpoints the given nodes read from (themselves included), in opening order."""
        needed = set()
        for nid in node_ids:
            needed.add(nid)
            needed.update(self.recipe.upstream(nid))
        return [nid for nid in self.checkpoints if nid in needed]

    def input(self, node_id: str, port: str) -> str:
        """The node connected to a single-connection input port."""
        return self.recipe.inputs(node_id, port)[0]

    # ---- loading -------------------------------------------------------------------------------
    def _read(self, nid: str, name: str) -> torch.Tensor | None:
        """Runs in a reader thread: map the tensor, touch its pages while checking for NaN/Inf
        (one vectorised min/max pass; NaN propagates into it), pin it for a CUDA copy."""
        ckpt = self.checkpoints[nid]
        if name not in ckpt:
            return None
        t = ckpt.get(name)
        probe = t.float() if t.is_floating_point() and t.element_size() == 1 else t  # fp8 has no min/max kernels
        if t.is_floating_point() and t.numel() and not all(map(math.isfinite, (float(v) for v in torch.aminmax(probe)))):
            msg = f"{ckpt.path}: tensor '{name}' contains NaN or Inf values"
            if msg not in self.result.warnings:  # statistic passes read a tensor more than once
                log.warning(msg)
                self.result.warnings.append(msg)
        if self.device.type == "cuda":
            t = t.pin_memory()
        return t

    def _submit(self, reads: list[tuple[str, str]]) -> dict[tuple[str, str], Future]:
        numel = sum(self.checkpoints[nid].info(n).numel for nid, n in reads if n in self.checkpoints[nid])
        if numel < _INLINE_READ_ELEMENTS:
            return {(nid, n): self._read_now(nid, n) for nid, n in reads}
        return {(nid, n): self._pool.submit(self._read, nid, n) for nid, n in reads}

    def read_plan(self, ckpt_ids: list[str], targets: Iterable[str] | None = None):
        """For an output name, the (checkpoint, tensor name) pairs to read ahead: the name itself in every
        checkpoint, unless a layer stack renames tensors on the way; then what computing ``targets`` for
        that name reads (without ``targets``, nothing is read ahead: each tensor is read when asked)."""
        if not self._renames:
            return lambda name: [(c, name) for c in ckpt_ids]
        wanted = list(targets or [])
        return lambda name: self._reads(wanted, name)

    def _reads(self, targets: list[str], name: str) -> list[tuple[str, str]]:
        """The (checkpoint, tensor name) pairs that computing ``targets`` for ``name`` reads."""
        todo = [(t, name) for t in targets if name in self.reference(t)]
        seen: set[tuple[str, str]] = set()
        found = []
        while todo:
            nid, n = todo.pop()
            if (nid, n) in seen:
                continue
            seen.add((nid, n))
            kind = node_kind(self.recipe.nodes[nid].type)
            if kind.source:
                if nid in self.checkpoints and n in self.checkpoints[nid]:
                    found.append((nid, n))
            elif kind.renames:
                todo.extend([self.reference(nid).sources[n]] if n in self.reference(nid).sources else [])
            else:
                todo.extend((s, n) for s in self._index.sources.get(nid, []))
        return found

    def _read_now(self, nid: str, name: str) -> Future:
        """``_read`` in this thread, its outcome held in a finished future like a pooled read's."""
        fut: Future = Future()
        try:
            fut.set_result(self._read(nid, name))
        except Exception as exc:
            fut.set_exception(exc)
        return fut

    def _receive(self, name: str, futures: dict[tuple[str, str], Future]) -> None:
        self._memo.clear()
        self._buffer_names.clear()
        self._loaded = {}
        for key, fut in futures.items():
            t = fut.result()
            if t is not None:
                self._loaded[key] = t
                self.result.bytes_read += t.numel() * t.element_size()

    def stream(self, names: list[str], ckpt_ids: list[str], targets: Iterable[str] | None = None):
        """Yield each name once its input tensors are loaded; the next name's reads run meanwhile.
        ``targets`` are the nodes to be computed (what is read ahead when a layer stack renames tensors)."""
        plan = self.read_plan(ckpt_ids, targets)
        pending = self._submit(plan(names[0])) if names else {}
        for i, name in enumerate(names):
            self.cancel.raise_if_cancelled()
            current = pending
            pending = self._submit(plan(names[i + 1])) if i + 1 < len(names) else {}
            try:
                self._receive(name, current)
            except BaseException:
                for fut in pending.values():
                    fut.cancel()
                raise
            yield name
        self._memo.clear()
        self._loaded = {}

    # ---- per-tensor graph evaluation -----------------------------------------------------------
    def compute(self, node_id: str, name: str) -> torch.Tensor | None:
        """The value of ``node_id`` for tensor ``name`` on the device (None = a zero task vector).

        Checkpoint values keep their stored dtype (so linear merges can accumulate straight from
        fp16/bf16); everything computed is in the compute dtype. ``value`` gives the cast form.
        """
        if (node_id, name) in self._memo:
            return self._memo[(node_id, name)]
        for dep in self._inputs_first(node_id):  # so that evaluating a node never recurses more than a step
            if (dep, name) not in self._memo:
                self._memo[(dep, name)] = self._evaluate(dep, name)
        value = self._memo[(node_id, name)] = self._evaluate(node_id, name)
        return value

    def _inputs_first(self, node_id: str) -> list[str]:
        """The computed (non-checkpoint) nodes ``node_id`` depends on for the same tensor name, in dependency
        order (once per node): not past a layer stack, which asks its inputs for other names."""
        if node_id not in self._dependencies:
            upstream: set[str] = set()
            renames = node_kind(self.recipe.nodes[node_id].type).renames
            todo = [] if renames else list(self._index.sources.get(node_id, []))
            while todo:
                nid = todo.pop()
                if nid not in upstream:
                    upstream.add(nid)
                    if not node_kind(self.recipe.nodes[nid].type).renames:
                        todo.extend(self._index.sources.get(nid, []))
            self._dependencies[node_id] = [n for n in self.order
                                           if n in upstream and not node_kind(self.recipe.nodes[n].type).source]
        return self._dependencies[node_id]

    def _evaluate(self, node_id: str, name: str) -> torch.Tensor | None:
        """One node's value for ``name``, its inputs' values taken from (or put into) the memo."""
        kind = node_kind(self.recipe.nodes[node_id].type)
        if not (kind.source or kind.renames) and not self.reference(node_id).info(name).dtype.is_floating_point:
            # integer buffers (position ids, masks) are not merged: models keep the reference's copy
            return None if self.kinds[node_id] == DELTA else self.compute(self.reference_id(node_id), name)
        return kind.compute(self, node_id, name)

    def value(self, node_id: str, name: str) -> torch.Tensor | None:
        """``compute`` cast to the compute dtype (float tensors only), cached for the current name."""
        t = self.compute(node_id, name)
        if t is None or not t.is_floating_point() or t.dtype == self.compute_dtype:
            return t
        key = (node_id, name, "cast")
        if key not in self._memo:
            self._memo[key] = t.to(self.compute_dtype)
        return self._memo[key]

    def checkpoint_tensor(self, nid: str, name: str) -> torch.Tensor | None:
        """A checkpoint's stored tensor on the device (None: a task vector's file lacks it, i.e. zero)."""
        ckpt = self.checkpoints[nid]
        raw = self._loaded.get((nid, name))
        if raw is None:
            if name in ckpt:
                raw = self._read(nid, name)
            elif ckpt.kind == DELTA:
                return None
            else:
                raise CheckpointError(f"tensor '{name}' is missing", path=str(ckpt.path), tensor=name)
        return raw.to(self.device, non_blocking=True)

    def _resolve(self, node_id: str, name: str) -> tuple[list[str], dict[str, Any], TensorContext]:
        """A merge node's input keys, its parameters resolved for ``name``, and the method context."""
        node = self.recipe.nodes[node_id]
        spec = get_method(node.params["method"])
        keys = self.recipe.inputs(node_id, "models")
        layer_count = self.layer_count(node_id)
        layer = layer_index(name)
        params = resolve_params(spec.params, node.params, keys, name, layer, layer_count)
        for p in spec.params:
            if p.type == "path" and params.get(p.name):
                params[p.name] = str(self.recipe.resolve_path(params[p.name]))
        statistics = None
        if spec.statistics_file is not None:  # files are opened on first use, once per run (closed by close())
            statistics = self._statistics_files.for_tensor(
                spec.statistics_file, str(params.get(spec.statistics_file.param) or ""), keys, name,
                self.reference(node_id).info(name).shape, self.device)
        ctx = TensorContext(name, layer, layer_count, self.device, int(params.get("seed", 0) or 0),
                            self._stats.get(node_id), statistics)
        return keys, params, ctx

    def merge_inputs(self, node_id: str, name: str) -> tuple[MergeInputs, dict[str, Any], TensorContext]:
        """What a merge node's method receives for tensor ``name`` (fp32 on the device; models as stored
        for a method with ``chunked_inputs``, which converts them chunk by chunk)."""
        keys, params, ctx = self._resolve(node_id, name)
        base_ids = self.recipe.inputs(node_id, "base")
        deltas = any(self.kinds[k] == DELTA for k in keys)
        chunked = get_method(self.recipe.nodes[node_id].params["method"]).chunked_inputs and not deltas
        get = self.compute if chunked else self.value
        base = get(base_ids[0], name) if base_ids else None
        values = [get(k, name) for k in keys]
        if deltas:
            deltas = [torch.zeros_like(base) if v is None else (v if self.kinds[k] == DELTA else v - base)
                      for k, v in zip(keys, values)]
            inputs = MergeInputs(base, keys, deltas=deltas)
        else:
            inputs = MergeInputs(base, keys, models=values)
        return inputs, params, ctx

    def _linear_merge(self, node_id: str, name: str) -> torch.Tensor:
        """Σ a_t θt + b θ0 accumulated in place straight from the stored tensors (no per-input copies)."""
        spec = get_method(self.recipe.nodes[node_id].params["method"])
        keys, params, _ = self._resolve(node_id, name)
        coefs, base_coef = spec.linear(params, len(keys))
        terms = []
        for key, c in zip(keys, coefs):
            if self.kinds[key] == DELTA:  # a task vector contributes a_t (θ0 + τt)
                base_coef += c
            terms.append((self.compute(key, name), c))
        base_ids = self.recipe.inputs(node_id, "base")
        if base_ids:
            terms.append((self.compute(base_ids[0], name), base_coef))
        out = self._output_buffer(node_id, name, self.reference(node_id).info(name).shape)
        first = True
        for x, c in terms:
            if x is not None and c != 0.0:
                self._axpy(out, x, c, first)
                first = False
        if first:
            out.zero_()
        return out

    def _output_buffer(self, node_id: str, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """An fp32 tensor for a node's result; while streaming to disk, one reused buffer per node
        (the result is written before the next name), which spares the allocator's page faults; a node
        that layer stacks ask for several names at once gets one buffer per name."""
        numel = math.prod(shape)
        if not self.reuse_buffers:
            return torch.empty(shape, dtype=self.compute_dtype, device=self.device)
        held = self._buffer_names.setdefault(node_id, [])
        if name not in held:
            held.append(name)
        key = (node_id, held.index(name))
        buf = self._out_buffers.get(key)
        if buf is None or buf.numel() < numel:
            buf = self._out_buffers[key] = torch.empty(numel, dtype=self.compute_dtype, device=self.device)
        return buf[:numel].view(shape)

    def _axpy(self, out: torch.Tensor, x: torch.Tensor, coef: float, first: bool) -> None:
        """``out = coef·x`` when ``first`` else ``out += coef·x``. On the CPU a stored fp16/bf16 ``x`` is
        converted chunk by chunk through a small scratch buffer: torch's mixed-dtype add is not
        vectorised there (about 8× slower than converting first)."""
        if x.dtype == out.dtype or out.device.type != "cpu":
            if first:
                torch.mul(x, coef, out=out) if x.dtype == out.dtype else out.copy_(x).mul_(coef)
            else:
                out.add_(x, alpha=coef)
            return
        if self._scratch is None:
            self._scratch = torch.empty(_CHUNK, dtype=out.dtype)
        flat_out, flat_x = out.view(-1), x.reshape(-1)
        for start in range(0, flat_out.numel(), _CHUNK):
            o = flat_out[start:start + _CHUNK]
            if first:
                o.copy_(flat_x[start:start + _CHUNK]).mul_(coef)
            else:
                tmp = self._scratch[: o.numel()]
                tmp.copy_(flat_x[start:start + _CHUNK])
                o.add_(tmp, alpha=coef)

    def merge_output(self, node_id: str, name: str) -> torch.Tensor:
        """A merge node's result for ``name`` (its method on the inputs; a linear method accumulates in place)."""
        ref_info = self.reference(node_id).info(name)
        spec = get_method(self.recipe.nodes[node_id].params["method"])
        try:
            if spec.linear is not None:
                out = self._linear_merge(node_id, name)
            elif node_id in self.task_views and spec.task_parts is not None:
                inputs, params, ctx = self.merge_inputs(node_id, name)
                out = spec.task_parts.model(inputs, params, ctx, self.task_views[node_id])
            else:
                inputs, params, ctx = self.merge_inputs(node_id, name)
                out = spec.merge(inputs, params, ctx)
        except EngineInputError as exc:
            raise EngineInputError(f"{spec.label} failed on tensor '{name}': {exc}", tensor=name) from exc
        if tuple(out.shape) != ref_info.shape:
            raise EngineInputError(f"{spec.label} produced shape {list(out.shape)} for tensor '{name}', "
                                   f"expected {list(ref_info.shape)}", tensor=name)
        return out

    # ---- whole-model statistics ----------------------------------------------------------------
    def gather_statistics(self, targets: Iterable[str]) -> None:
        """Run the statistic passes of every merge node upstream of ``targets`` (in dependency order)."""
        wanted = set(targets)
        for t in list(wanted):
            wanted.update(self.recipe.upstream(t))
        for nid in self.order:
            node = self.recipe.nodes[nid]
            kind = node_kind(node.type)
            if nid not in wanted or kind.method_param is None or nid in self._stats:
                continue
            spec = get_method(node.params[kind.method_param])
            if spec.statistic is None:
                continue
            stat = spec.statistic({**spec.defaults(), **node.params})
            if stat is None:
                continue
            names = [i.name for i in self.tensor_infos(nid) if i.dtype.is_floating_point]
            ckpts = self.checkpoints_for([nid])
            for pass_index in range(stat.passes):
                tracker = ProgressTracker(self.progress, f"statistics {nid} ({pass_index + 1}/{stat.passes})", len(names))
                for name in self.stream(names, ckpts, [nid]):
                    inputs, params, ctx = self.merge_inputs(nid, name)
                    stat.observe(pass_index, inputs, params, ctx)
                    tracker.advance()
                stat.finish_pass(pass_index)
            self._stats[nid] = stat.result()

    # ---- outputs -------------------------------------------------------------------------------
    def materialize(self, node_id: str) -> dict[str, torch.Tensor]:
        """A node's whole output state dict on the device (fp32 for float tensors)."""
        self.reuse_buffers = False
        if self.kinds.get(node_id) not in (MODEL, DELTA):
            raise EngineInputError(f"node '{node_id}' does not produce weights")
        if self.vocabulary is not None and self.vocabulary.plan is None:
            self._use_vocabulary(self.vocabulary, (self.reference_id(node_id),) * 2)
        self.gather_statistics([node_id])
        infos = self.tensor_infos(node_id)
        tracker = ProgressTracker(self.progress, f"computing {node_id}", len(infos))
        out: dict[str, torch.Tensor] = {}
        for name in self.stream([i.name for i in infos], self.checkpoints_for([node_id]), [node_id]):
            value = self.value(node_id, name)
            out[name] = torch.zeros(self.reference(node_id).info(name).shape, device=self.device) if value is None else value
            tracker.advance()
        return out

    def run(self, sinks: Iterable[str] | None = None, options: RunOptions | None = None) -> RunResult:
        """Run the given sink nodes (default: every Save and Evaluate node), each kind's together:
        every Save node's model streams to disk in one pass, then Evaluate nodes score their models."""
        start = time.perf_counter()
        options = options or RunOptions()
        wanted = sink_ids(self.recipe, self.order) if sinks is None else list(sinks)
        if not wanted:
            raise EngineInputError("the recipe has no output (Save or Evaluate node) to run")
        by_kind: dict[Any, list[str]] = {}
        for nid in wanted:
            kind = node_kind(self.recipe.node(nid).type)
            if not kind.sink:
                raise EngineInputError(f"node '{nid}' ({kind.label}) is not an output of the recipe")
            by_kind.setdefault(kind, []).append(nid)
        for kind, ids in by_kind.items():
            self.cancel.raise_if_cancelled()
            kind.run_sinks(self, ids, options)
        self.result.seconds = time.perf_counter() - start
        return self.result

    def save_all(self, save_ids: list[str] | None = None, *, force: bool = False) -> RunResult:
        """Stream every Save node's model to disk; all outputs appear together or none does."""
        start = time.perf_counter()
        saves = save_ids or nodes_of(self.recipe, SAVE)
        if not saves:
            raise EngineInputError("the recipe has no Save node to write")
        sources = {s: self.recipe.inputs(s, "model")[0] for s in saves}
        if self.vocabulary is not None:
            keys = {s: self._save_vocabulary(s) for s in saves}
            if len(set(keys.values())) > 1:
                a, b = list(dict((k, s) for s, k in keys.items()).values())[:2]
                raise EngineInputError(f"Save nodes '{a}' and '{b}' need different vocabularies (tokenizer_source "
                                       f"'{keys[a][0]}' and '{keys[b][0]}'); run them one at a time")
            self._use_vocabulary(self.vocabulary, keys[saves[0]])
        self.gather_statistics(sources.values())
        infos = {s: self.tensor_infos(src) for s, src in sources.items()}
        names = list(dict.fromkeys(i.name for s in saves for i in infos[s]))
        ckpts = self.checkpoints_for(sources.values())
        plan = self.read_plan(ckpts, sources.values())
        total_bytes = sum(self.checkpoints[c].info(n).nbytes for name in names for c, n in plan(name)
                          if n in self.checkpoints[c])
        tracker = ProgressTracker(self.progress, "merging", len(names), total_bytes)
        with ExitStack() as stack:
            writers = {s: stack.enter_context(self._writer(s, infos[s], force)) for s in saves}
            counted = self.result.bytes_read
            # this name's inputs are read (and counted) once it is yielded
            for name in self.stream(names, ckpts, sources.values()):
                for s, src in sources.items():
                    if name in writers[s].planned:
                        value = self.compute(src, name)
                        writers[s].write(name, value)
                        for part, tensor in self.task_parts(src, name).items():
                            writers[s].write(part, tensor)
                self.result.tensors += 1
                tracker.advance(nbytes=self.result.bytes_read - counted, message=name)
                counted = self.result.bytes_read
            self.cancel.raise_if_cancelled()
            for s, w in writers.items():
                self.result.outputs[s] = w.commit()
        self.result.seconds = time.perf_counter() - start
        return self.result

    def _writer(self, save_id: str, infos: list[TensorInfo], force: bool) -> CheckpointWriter:
        params = self.recipe.nodes[save_id].params
        out_dtype = parse_dtype(params.get("dtype", "auto"))
        plan = [(i.name, i.shape, out_dtype if (out_dtype is not None and i.dtype.is_floating_point)
                 else torch.bfloat16 if i.dtype in FP8 else i.dtype) for i in infos]
        metadata = {"format": "pt", "weightsmith_version": engine.__version__,
                    "weightsmith_recipe": json.dumps(resolved_recipe(self.recipe), separators=(",", ":")),
                    "weightsmith_versions": json.dumps(versions(), separators=(",", ":")),
                    "weightsmith_output": save_id}
        protected = [c.path for c in self.checkpoints.values()] + ([self.recipe.base_dir] if self.recipe.base_dir else [])
        writer = CheckpointWriter(self.recipe.resolve_path(params["path"]), plan,
                                  shard_size=params.get("shard_size", "5GB"), metadata=metadata, force=force,
                                  protected=protected)
        self.result.warnings.extend(writer.notes)
        try:
            self._plan_task_parts(writer, self.recipe.inputs(save_id, "model")[0], plan, metadata)
            model_id, chosen = self.recipe.inputs(save_id, "model")[0], params.get("copy_files_from")
            source = chosen if chosen in self.checkpoints else self.files_source(chosen or model_id)
            table = self.reference(model_id)
            layers = [i for _, i in table.layers] if table.renamed else None  # a stack: its layer count and order
            vocab = self.vocabulary.plan if self.vocabulary is not None else None
            if source in self.checkpoints:
                folder = self.checkpoints[source].path
                folder = folder if folder.is_dir() else folder.parent
                for fname in COPIED_FILES:
                    if vocab is not None and fname in TOKENIZER_FILES:
                        continue
                    if fname == "config.json" and (folder / fname).is_file():
                        self.result.warnings.extend(copy_config(writer, folder / fname, plan, layers=layers,
                                                                vocab_size=vocab.rows if vocab else None))
                    elif (folder / fname).is_file():
                        writer.add_file(folder / fname)
            if vocab is not None:
                vocab.write_tokenizer(writer)
            if params.get("model_card", True):
                writer.add_text("README.md", model_card(self.recipe, save_id))
        except OSError as exc:
            writer.abort()
            raise CheckpointError(f"cannot copy model files ({exc})", path=str(writer.out_dir)) from exc
        return writer

    def files_source(self, node_id: str) -> str | None:
        """The checkpoint node whose config and tokenizer files describe a node's output (a layer stack's
        is the input its embeddings come from)."""
        table = self.tables.table(node_id)
        return table.files_from if table is not None else None

    def _task_parts_spec(self, node_id: str):
        """The ``TaskParts`` of the method of a merge node (None for other nodes and methods)."""
        node = self.recipe.nodes[node_id]
        spec = node_kind(node.type).method(node)
        return spec.task_parts if spec is not None else None

    def _plan_task_parts(self, writer: CheckpointWriter, src: str, plan: list, metadata: dict[str, str]) -> None:
        """Plan the per-task parts file of a saved merge whose method has task parts (``TaskParts``)."""
        parts = self._task_parts_spec(src)
        if parts is None:
            return
        keys = self.recipe.inputs(src, "models")
        tensors = [(name + suffix, shape_, dtype_) for name, shape, dtype in plan if dtype.is_floating_point
                   for suffix, shape_, dtype_ in parts.plan(shape, dtype, len(keys))]
        tasks = [{"name": k, "expert": str(self.checkpoints[k].path) if k in self.checkpoints else None} for k in keys]
        node = self.recipe.nodes[src]
        params = {**get_method(node.params["method"]).defaults(), **node.params}
        writer.add_tensor_file(parts.file, tensors, {**metadata, **parts.metadata(params, self._stats.get(src), tasks)})

    def task_parts(self, node_id: str, name: str) -> dict[str, torch.Tensor]:
        """A merge node's saved per-task parts for tensor ``name`` (``<name><suffix>`` → tensor; empty for
        methods without task parts and for tensors that are not merged)."""
        parts = self._task_parts_spec(node_id)
        if parts is None or not self.reference(node_id).info(name).dtype.is_floating_point:
            return {}
        inputs, params, ctx = self.merge_inputs(node_id, name)
        return {name + suffix: t for suffix, t in parts.tensors(inputs, params, ctx).items()}

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for ckpt in self.checkpoints.values():
            ckpt.close()
        self._statistics_files.close()

    def __enter__(self) -> "GraphRun":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def resolved_recipe(recipe: Recipe) -> dict:
    """The recipe as run: every node's declared parameters with their defaults filled in (a merge node's
    from its method), so the file records exactly what made it even when defaults change later."""
    data = recipe.to_json()
    for node in data["nodes"]:
        declared = node_kind(node["type"]).declared_params(recipe.nodes[node["id"]])
        node["params"] = {**{p.name: p.default for p in declared}, **node["params"]}
    return data


def versions() -> dict[str, str]:
    """The versions of the software that computed and wrote a model."""
    import safetensors

    return {"weightsmith": engine.__version__, "torch": torch.__version__, "safetensors": safetensors.__version__}


def copy_config(writer: CheckpointWriter, src: Path, plan: list, vocab_size: int | None = None,
                layers: list[int] | None = None) -> list[str]:
    """Copy ``config.json`` with its ``torch_dtype`` (and ``dtype``) set to the saved weights' dtype, so
    transformers loads the model in the precision it was written in, and ``vocab_size`` when given; for a
    layer stack (``layers``: the source layer of each output layer) its layer count and per-layer settings
    (``engine.graph.stacking.restack_config``). Returns notes on what could not be set."""
    floats = [dtype for _, _, dtype in plan if dtype.is_floating_point]
    try:
        config = json.loads(src.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = None
    if not isinstance(config, dict) or not floats:
        writer.add_file(src)
        return [] if layers is None else [f"{src} could not be read: its layer count was not set to {len(layers)}"]
    notes = [] if layers is None else restack_config(config, layers, str(src))
    name = str(max(set(floats), key=floats.count)).removeprefix("torch.")
    config["torch_dtype"] = name
    if vocab_size is not None:
        config["vocab_size"] = vocab_size
    if "dtype" in config:
        config["dtype"] = name
    writer.add_text("config.json", json.dumps(config, indent=2))
    return notes


def model_card(recipe: Recipe, save_id: str) -> str:
    """A short README.md describing how the saved model was made."""
    lines = [f"# {Path(str(recipe.nodes[save_id].params.get('path', 'merged'))).name}", "",
             f"Merged with Weightsmith {engine.__version__}.", ""]
    src = recipe.inputs(save_id, "model")[0]
    for nid in [*reversed(recipe.upstream(src)), src]:
        node = recipe.nodes[nid]
        kind = node_kind(node.type)
        if kind.source:
            lines.append(f"- input `{nid}`: `{node.params.get(kind.file_param)}`")
        elif kind.method_param:
            params = {k: v for k, v in node.params.items() if k != kind.method_param}
            lines.append(f"- {kind.name} `{nid}`: **{node.params.get(kind.method_param)}** with inputs "
                         f"{', '.join(recipe.inputs(nid, 'models'))}"
                         + (f" on base {recipe.inputs(nid, 'base')[0]}" if recipe.inputs(nid, 'base') else "")
                         + (f", parameters `{json.dumps(params)}`" if params else ""))
        else:
            lines.append(f"- {node.type} `{nid}` {json.dumps(node.params) if node.params else ''}".rstrip())
    spec = node_kind(recipe.nodes[src].type).method(recipe.nodes[src])
    if spec is not None and spec.task_parts is not None:
        lines += ["", f"`{spec.task_parts.file}` holds what rebuilds each input task's own model ({spec.label}); "
                      "the model files hold the single merged model and load without it."]
    lines += ["", "The full recipe is stored in the safetensors metadata (`weightsmith_recipe`).", ""]
    return "\n".join(lines)


def run_recipe(recipe: Recipe, *, device: str = "auto", progress: ProgressCallback | None = None,
               cancel: CancelToken | None = None, force: bool = False, outputs: list[str] | None = None,
               scorer: ModelScorer | None = None, options: RunOptions | None = None) -> RunResult:
    """Validate and run a recipe's outputs: every Save and Evaluate node, or those in ``outputs``
    (Evaluate nodes need ``scorer``; ``engine.evaluation.run_graph`` supplies one)."""
    options = options or RunOptions(force=force)
    with GraphRun(recipe, device=device, progress=progress, cancel=cancel, scorer=scorer) as run:
        return run.run(outputs, options)


def materialize(recipe: Recipe, node_id: str, *, device: str = "auto", progress: ProgressCallback | None = None,
                cancel: CancelToken | None = None) -> dict[str, torch.Tensor]:
    """Compute one node's state dict in memory (for evaluation), streaming its inputs."""
    with GraphRun(recipe, device=device, progress=progress, cancel=cancel) as run:
        return run.materialize(node_id)
