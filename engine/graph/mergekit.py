"""mergekit YAML ⇄ Weightsmith recipe (``weightsmith import-mergekit`` / ``export-mergekit``).

What maps (mergekit 0.1.5 semantics):

- ``models`` (a list of ``{model, parameters}``), ``base_model`` and ``merge_method`` become checkpoint
  nodes, one merge node and a save node. Model paths are resolved against ``base_dir`` and must exist
  locally (Weightsmith does not download from the Hugging Face Hub). ``path+lora`` becomes the model's
  checkpoint plus the adapter's checkpoint joined by an ``add`` node.
- Methods: ``linear``, ``slerp``, ``nuslerp``, ``task_arithmetic``, ``ties``, ``dare_linear``,
  ``dare_ties``, ``breadcrumbs``, ``breadcrumbs_ties``, ``della``, ``della_linear``, ``model_stock`` —
  Weightsmith's methods of the same names, with the same parameter names. The base model is taken out of
  the ``models`` list the way mergekit does (for ``linear``, which has no base, a ``base_model`` joins
  the averaged inputs as mergekit does).
- Parameters: per-model values (``weight``, ``density``, ``gamma``, ``epsilon``) come from each model's
  ``parameters``, then from the top-level ``parameters``, then mergekit's default; shared values
  (``t``, ``lambda``, ``normalize``, ``rescale``, ``filter_wise``, ``nuslerp_*``) from the top-level
  ``parameters``. Every value is written explicitly, so a Weightsmith default that differs from
  mergekit's (TIES density 0.2 vs 1.0, DARE rescaling by 1/density vs the L1 norm) never leaks in.
  Gradients (lists) map to per-layer schedules with mergekit's interpolation (see
  ``engine.methods.schedule``); filter lists ``[{filter, value}]`` map to override lists — mergekit's
  filter is a substring, so it is regex-escaped (``*`` or no filter matches everything), and a fallback
  entry is appended when mergekit would fall through to the next scope or the default.
  ``rescale: true/false`` maps to ``rescale: l1/none``. ``int8_mask`` (a memory option) is accepted and
  ignored. Parameters mergekit's method declares but does not use (``density`` for
  ``task_arithmetic``) are dropped.
- ``dtype`` / ``out_dtype`` map to the save node's dtype (``out_dtype`` first). Weightsmith always
  computes in float32, so a mergekit merge computed in float16 differs by rounding only.
- ``tokenizer_source: base`` maps to the save node's ``copy_files_from`` (the base); ``union`` and a
  model's path map to the save node's ``tokenizer_source`` (``union`` / that model's node), whose
  embedding rows are aligned by token as mergekit aligns them (docs/vocabulary.md). The newer
  ``tokenizer: {source: …}`` block maps the same way (its ``source`` defaults to ``union``, as in
  mergekit).
- ``slices`` (frankenmerges, docs/frankenmerges.md): ``merge_method: passthrough`` gives a layer stack
  node (``engine.graph.stacking``) of the sources' ``layer_range`` s (end excluded); with a merge method,
  each slice is a merge node over one single-slice stack per source (so gradients run over the slice's
  layers, as mergekit's ``t`` does) and several slices are stacked. A slice's ``parameters`` and
  ``base_model`` come before the top-level ones, a source's ``parameters`` before both. A range beyond
  a checkpoint's layers is refused naming the config line. Passthrough's ``scale`` becomes a linear
  merge without normalising (weight = scale, filters and gradients kept) over a stack of the range.
- Several ``---`` documents (mergekit-multi): one recipe; a document naming another one's ``name`` as a
  model uses that document's output node (an intermediate, streamed, never written or rounded to its
  dtype); a cycle, a repeated name or a second unnamed document is refused. Export writes every merge or
  stack the saved model uses as a named document before it.

What does not map (``EngineInputError`` names it): ``modules``, a slice's ``residual_weight``, other
merge methods, the ``tokenizer`` block's ``tokens`` (per-token
embedding sources and ``force``) and ``pad_to_multiple_of``, a LoRA-combined model as tokenizer source,
``chat_template``, Hub revisions (``model@rev``), ``rescale: true`` for ``ties`` and ``task_arithmetic``
(mergekit's ties can L1-rescale its trimmed vectors; Weightsmith's ties does not), unknown parameters.
On export, additionally: nodes other than checkpoints, LoRA ``add``, merges, stacks and one save, a
stack's ``non_layer_from`` other than mergekit's rule, Weightsmith-only methods and options
(``scope: model``, ``rescale: inverse``), regular expressions that are not plain substrings (an
unescaped ``.`` is read as a literal dot). The DARE/DELLA ``seed`` is dropped on export (mergekit
draws from torch's global generator).

Hostile YAML is refused before it costs anything: nesting deeper than 64 levels, or aliases that would
expand to more than 100,000 values ("billion laughs") or contain themselves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from engine.checkpoints import num_layers, open_checkpoint
from engine.errors import EngineInputError
from engine.graph.stacking import Slice, parse_slices
from engine.methods import get_method

REQUIRED = object()
IGNORED = object()

_GTA_SHARED = {"lambda": 1.0, "int8_mask": IGNORED}
_GTA_MODEL = {"weight": REQUIRED, "density": 1.0}

# mergekit method -> (shared parameters, per-model parameters), each {name: mergekit default}.
METHODS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "linear": ({"normalize": True}, {"weight": REQUIRED}),
    "slerp": ({"t": REQUIRED}, {}),
    "nuslerp": ({"nuslerp_row_wise": False, "nuslerp_flatten": True}, {"weight": REQUIRED}),
    "model_stock": ({"filter_wise": False}, {}),
    "task_arithmetic": ({**_GTA_SHARED, "normalize": False, "rescale": False}, {"weight": REQUIRED, "density": IGNORED}),
    "ties": ({**_GTA_SHARED, "normalize": True, "rescale": False}, dict(_GTA_MODEL)),
    "dare_ties": ({**_GTA_SHARED, "normalize": False, "rescale": True}, dict(_GTA_MODEL)),
    "dare_linear": ({**_GTA_SHARED, "normalize": False, "rescale": True}, dict(_GTA_MODEL)),
    "breadcrumbs": ({**_GTA_SHARED, "normalize": False, "rescale": False}, {**_GTA_MODEL, "gamma": 0.01}),
    "breadcrumbs_ties": ({**_GTA_SHARED, "normalize": False, "rescale": False}, {**_GTA_MODEL, "gamma": 0.01}),
    "della": ({**_GTA_SHARED, "normalize": True, "rescale": True}, {**_GTA_MODEL, "epsilon": 0.15}),
    "della_linear": ({**_GTA_SHARED, "normalize": False, "rescale": True}, {**_GTA_MODEL, "epsilon": 0.15}),
    "sce": ({"select_topk": 1.0, "int8_mask": IGNORED}, {}),
    "karcher": ({"max_iter": 10, "tol": 1e-5}, {}),
    "multislerp": ({"normalize_weights": True, "eps": 1e-8}, {"weight": REQUIRED}),
    "nearswap": ({"t": REQUIRED}, {}),
    "arcee_fusion": ({}, {}),
}
# Methods whose mergekit implementation averages the base model's tensor together with the others.
_BASE_IS_A_MODEL = {"linear", "karcher"}
_NO_RESCALE = {"task_arithmetic", "ties"}
_DTYPES = {"float16": "fp16", "fp16": "fp16", "half": "fp16", "bfloat16": "bf16", "bf16": "bf16",
           "float32": "fp32", "fp32": "fp32", "float": "fp32"}
_EXPORT_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}
_TOP_KEYS = {"models", "base_model", "merge_method", "parameters", "dtype", "out_dtype", "tokenizer_source",
             "tokenizer", "chat_template", "slices", "modules", "name"}
_SLICE_KEYS = {"sources", "parameters", "base_model"}
_SOURCE_KEYS = {"model", "layer_range", "parameters"}
_MAX_YAML_NODES = 100_000  # values in a config once every alias is expanded (real configs hold hundreds)
_MAX_YAML_DEPTH = 64


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses deep nesting while composing and alias bombs (aliases whose
    expansion would exceed ``_MAX_YAML_NODES`` values, or that contain themselves) before building."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        self.key_lines: dict[str, int] = {}
        self.slice_lines: dict[tuple[int, ...], int] = {}  # (slice,) and (slice, source) → line, 0-based indices
        self.doc_line = 1

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > _MAX_YAML_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise EngineInputError(f"line {line}: nested deeper than {_MAX_YAML_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node):
        if _expanded_size(node) > _MAX_YAML_NODES:
            raise EngineInputError(f"its aliases expand to more than {_MAX_YAML_NODES:,} values "
                                   "(an alias bomb, or an alias inside itself)")
        self.doc_line = node.start_mark.line + 1
        self.key_lines, self.slice_lines = {}, {}
        if isinstance(node, yaml.MappingNode):
            self.key_lines = {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == "slices" and isinstance(v, yaml.SequenceNode):
                    self._note_slice_lines(v)
        return super().construct_document(node)

    def _note_slice_lines(self, slices: yaml.SequenceNode) -> None:
        for i, item in enumerate(slices.value):
            self.slice_lines[(i,)] = item.start_mark.line + 1
            if isinstance(item, yaml.MappingNode):
                for k, v in item.value:
                    if isinstance(k, yaml.ScalarNode) and k.value == "sources" and isinstance(v, yaml.SequenceNode):
                        for j, src in enumerate(v.value):
                            self.slice_lines[(i, j)] = src.start_mark.line + 1


def _expanded_size(root: yaml.Node) -> int:
    """How many values a composed YAML document holds with every alias expanded, counted once per
    distinct node (so a bomb costs its node count, not its expansion); capped above the limit."""
    sizes: dict[int, int] = {}
    active: set[int] = set()
    stack = [root]
    while stack:
        node = stack[-1]
        if id(node) in sizes:
            stack.pop()
            continue
        kids = _yaml_children(node)
        if id(node) not in active:
            active.add(id(node))
            if any(id(k) in active for k in kids):
                return _MAX_YAML_NODES + 1  # an alias inside itself expands forever
            stack.extend(k for k in kids if id(k) not in sizes)
            continue
        active.discard(id(node))
        stack.pop()
        sizes[id(node)] = min(_MAX_YAML_NODES + 1, 1 + sum(sizes[id(k)] for k in kids))
    return sizes[id(root)]


def _yaml_children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


# ---- import -------------------------------------------------------------------------------------

def import_mergekit_file(path: str | Path) -> dict:
    """``import_mergekit`` of a YAML file (models relative to its folder); every error names the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        return import_mergekit(text, path.resolve().parent)
    except OSError as exc:
        raise EngineInputError(f"cannot read ({exc.strerror or exc})", path=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise EngineInputError(f"not UTF-8 text (byte {exc.start} cannot be decoded)", path=str(path)) from exc
    except EngineInputError as exc:
        raise EngineInputError(str(exc), path=str(path)) from exc


@dataclass
class _Document:
    """One YAML document of a config: its mapping, the line of each top-level key, of each slice and
    slice source (``(slice,)`` / ``(slice, source)``, 0-based), where it starts and its place."""

    config: Any
    lines: dict[str, int]
    slice_lines: dict[tuple[int, ...], int]
    start: int
    number: int

    @property
    def name(self) -> str | None:
        name = self.config.get("name") if isinstance(self.config, dict) else None
        return str(name) if name is not None else None

    def at(self, key: str) -> str:
        return f" (line {self.lines[key]})" if key in self.lines else ""

    def at_slice(self, *where: int) -> str:
        return f" (line {self.slice_lines[where]})" if where in self.slice_lines else ""


def _load_documents(yaml_text: str) -> list[_Document]:
    """The config's documents (several when separated by ``---``, as mergekit-multi reads them); empty
    documents are skipped."""
    loader = _BoundedLoader(yaml_text)
    docs: list[_Document] = []
    try:
        while loader.check_data():
            data = loader.get_data()
            if data is not None:
                docs.append(_Document(data, loader.key_lines, loader.slice_lines, loader.doc_line, len(docs) + 1))
    except yaml.YAMLError as exc:
        raise EngineInputError(f"not valid YAML ({exc})") from exc
    except RecursionError as exc:  # a nesting _BoundedLoader did not see (deep flow collections in the parser)
        raise EngineInputError("not readable YAML: nested too deeply") from exc
    finally:
        loader.dispose()
    if not docs:
        raise EngineInputError("the mergekit config is empty")
    for doc in docs:
        if not isinstance(doc.config, dict):
            raise EngineInputError(_where(doc, docs) + "a mergekit config must be a YAML mapping")
    return docs


def _where(doc: _Document, docs: list[_Document]) -> str:
    """How messages name a document of a multi-document config (nothing for a single one)."""
    if len(docs) == 1:
        return ""
    return f"document {doc.number}" + (f" '{doc.name}'" if doc.name else "") + f" (line {doc.start}): "


def import_mergekit(yaml_text: str, base_dir: Path) -> dict:
    """Translate a mergekit YAML config into a recipe JSON dict.

    One document gives checkpoint nodes, its merge (``models:``) or layer stack (``slices:``) and a save
    node. Several ``---`` documents (mergekit-multi) give one recipe: a document names another one's
    output by that one's ``name`` wherever it names a model, and that output becomes an intermediate
    node of the graph (streamed, never written). Every document no other one names gets a save node
    (``save`` when there is one, else ``save_<name>``), writing to its ``name`` (``merged`` when unnamed).
    A cycle between documents, a repeated name or a second unnamed document is refused naming them."""
    docs = _load_documents(yaml_text)
    names: dict[str, _Document] = {}
    unnamed = [d for d in docs if d.name is None]
    if len(unnamed) > 1:
        raise EngineInputError(f"documents {unnamed[0].number} and {unnamed[1].number} both have no 'name'; "
                               "only one (the final merge) may be unnamed")
    for doc in docs:
        if doc.name is not None:
            if doc.name in names:
                raise EngineInputError(f"documents {names[doc.name].number} and {doc.number} are both named "
                                       f"'{doc.name}'")
            if len(docs) == 1:
                raise EngineInputError(f"'name'{doc.at('name')} names a merge for other documents to use; this "
                                       "config has one document")
            names[doc.name] = doc
    order = _document_order(docs, names)
    builder = _Builder(Path(base_dir), multi=len(docs) > 1)
    ids: dict[int, str] = {}
    for doc in docs:  # names that read alike once made ids ("a b", "a_b") get distinct ids
        stem = nid = _output_id(doc)
        count = 2
        while nid in ids.values():
            nid, count = f"{stem}_{count}", count + 1
        ids[doc.number] = nid
    builder.reserved.update(ids.values())
    bases: dict[int, str | None] = {}
    for doc in order:
        try:
            bases[doc.number] = _import_document(doc, builder, ids[doc.number])
        except EngineInputError as exc:
            raise EngineInputError(_where(doc, docs) + str(exc)) from exc
        if doc.name is not None:
            builder.outputs[doc.name] = ids[doc.number]
    used = {n for d in docs for n in _named_references(d, names)}
    sinks = [d for d in order if d.name is None or d.name not in used]
    nodes, edges = builder.nodes, builder.edges
    for doc in sinks:
        save_id = "save" if len(sinks) == 1 else builder.new_id(f"save_{ids[doc.number]}")
        try:
            params = _save_params(doc.config, builder, bases[doc.number])
        except EngineInputError as exc:
            raise EngineInputError(_where(doc, docs) + str(exc)) from exc
        if doc.name is not None:
            params["path"] = doc.name
        nodes.append({"id": save_id, "type": "save", "params": params})
        edges.append({"from": ids[doc.number], "to": save_id, "port": "model"})
    return {"format": "weightsmith-recipe", "version": 1, "name": "imported from mergekit",
            "nodes": nodes, "edges": edges}


def _output_id(doc: _Document) -> str:
    """The id of the node giving a document's output: its name, else 'merge' (one merge) or 'stack'."""
    if doc.name is not None:
        return re.sub(r"[^A-Za-z0-9_-]+", "_", doc.name) or "merge"
    slices = doc.config.get("slices")
    stacked = isinstance(slices, list) and (doc.config.get("merge_method") == "passthrough" or len(slices) > 1)
    return "stack" if stacked else "merge"


def _document_order(docs: list[_Document], names: dict[str, _Document]) -> list[_Document]:
    """The documents with each after those it names; a cycle is refused, naming its documents in order."""
    order: list[_Document] = []
    state: dict[int, str] = {}
    for root in docs:
        stack: list[tuple[_Document, list[str]]] = []
        if root.number in state:
            continue
        state[root.number] = "open"
        stack.append((root, list(_named_references(root, names))))
        while stack:
            doc, todo = stack[-1]
            if not todo:
                stack.pop()
                state[doc.number] = "done"
                order.append(doc)
                continue
            dep = names[todo.pop(0)]
            if state.get(dep.number) == "open":
                start = [d.number for d, _ in stack].index(dep.number)
                loop = [d.name or f"document {d.number}" for d, _ in stack[start:]]
                raise EngineInputError("the documents name each other in a cycle: "
                                       + " → ".join(f"'{n}'" for n in [*loop, loop[0]]))
            if dep.number not in state:
                state[dep.number] = "open"
                stack.append((dep, list(_named_references(dep, names))))
    return order


def _named_references(doc: _Document, names: Mapping[str, _Document]) -> list[str]:
    """The other documents' names that ``doc`` uses as models, in order."""
    config = doc.config
    refs: list[Any] = [config.get("base_model"), config.get("tokenizer_source")]
    tokenizer = config.get("tokenizer")
    if isinstance(tokenizer, dict):
        refs.append(tokenizer.get("source"))
    for item in config.get("models") or [] if isinstance(config.get("models"), list) else []:
        refs.append(item.get("model") if isinstance(item, dict) else None)
    for sl in config.get("slices") or [] if isinstance(config.get("slices"), list) else []:
        if isinstance(sl, dict):
            refs.append(sl.get("base_model"))
            refs += [src.get("model") for src in sl.get("sources") or [] if isinstance(src, dict)]
    found = []
    for ref in refs:
        try:
            model = _parse_ref(ref)[0] if ref is not None else None
        except EngineInputError:
            continue  # reported when the document is built
        if model in names and model != doc.name and model not in found:
            found.append(model)
    return found


def _import_document(doc: _Document, builder: "_Builder", out_id: str) -> str | None:
    """Add one document's nodes to ``builder`` with its output node ``out_id``; returns the node that
    ``tokenizer_source: base`` names (its base model's), if any."""
    config = doc.config
    _reject_unmapped(config)
    method = config.get("merge_method")
    if not isinstance(method, str):
        raise EngineInputError(f"'merge_method' must be a method name, got "
                               f"{type(method).__name__}{doc.at('merge_method')}")
    if config.get("slices"):
        return _import_slices(doc, builder, out_id, method)
    if method == "passthrough":
        raise EngineInputError(f"merge_method passthrough{doc.at('merge_method')} copies layer ranges: it takes "
                               "'slices' (sources with a layer_range), not 'models'")
    if method not in METHODS:
        raise EngineInputError(f"merge_method '{method}' has no Weightsmith equivalent "
                               f"(supported: passthrough, {', '.join(METHODS)})")
    base_ref = config.get("base_model")
    base_id = builder.model(base_ref) if base_ref is not None else None
    inputs = [(builder.model(ref), ref, params) for ref, params in _model_entries(config.get("models"))]
    glob = _mapping(config.get("parameters"), f"'parameters'{doc.at('parameters')}")
    _add_merge(builder, out_id, method, inputs, base_id, [glob], ["parameters"])
    return base_id


def _add_merge(builder: "_Builder", node_id: str, method: str, inputs: list[tuple[str, Any, dict]],
               base_id: str | None, scopes: list[dict], scope_names: list[str]) -> None:
    """A merge node ``node_id`` over ``inputs`` ((node id, model reference, own parameters)) and the
    optional base; parameters come from each input's own, then from ``scopes`` in order (a slice's
    ``parameters``, then the top level), then mergekit's default."""
    shared_spec, model_spec = METHODS[method]
    if method in _BASE_IS_A_MODEL:
        if base_id is not None and base_id not in [i for i, _, _ in inputs]:
            inputs.append((base_id, None, {}))
        base_id = None
    else:
        inputs = [x for x in inputs if x[0] != base_id]
    for scope, where in zip(scopes, scope_names):
        _check_known(scope, {**shared_spec, **model_spec}, method, where)
    params: dict[str, Any] = {"method": method}
    for name, default in shared_spec.items():
        settings = [scope.get(name) for scope in scopes]
        if name == "rescale" and method in _NO_RESCALE:
            if any(settings):
                raise EngineInputError(f"'rescale: true' for {method} (L1 rescaling of trimmed task vectors) "
                                       "has no Weightsmith equivalent")
            continue
        if default is not IGNORED:
            params.update(_shared_param(method, name, settings, default))
    for name, default in model_spec.items():
        if default is IGNORED:
            continue
        params[name] = {nid: _chain(name, [own.get(name), *(scope.get(name) for scope in scopes)], default,
                                    f"model '{ref}'") for nid, ref, own in inputs}
    for nid, ref, own in inputs:
        _check_known(own, {**shared_spec, **model_spec}, method, f"parameters of model '{ref}'")
    if any(p.name == "tie_break" for p in get_method(method).params):
        params["tie_break"] = "mergekit"  # equal magnitudes at a trim cut split as mergekit splits them
    builder.nodes.append({"id": node_id, "type": "merge", "params": params})
    builder.edges += [{"from": base_id, "to": node_id, "port": "base"}] if base_id else []
    builder.edges += [{"from": nid, "to": node_id, "port": "models"} for nid, _, _ in inputs]


def _import_slices(doc: _Document, builder: "_Builder", out_id: str, method: str) -> str | None:
    """A ``slices:`` document: with ``passthrough`` a layer stack of its sources' layer ranges; with a
    merge method, one merge per slice over a single-slice stack of each source (so the merge's per-layer
    values run over the slice, as mergekit's do), stacked when there are several slices."""
    config = doc.config
    slices = config.get("slices")
    if config.get("models"):
        raise EngineInputError("a mergekit config takes either 'models' or 'slices', not both")
    if not isinstance(slices, list):
        raise EngineInputError(f"'slices'{doc.at('slices')} must be a list of {{sources: [...]}}")
    if method != "passthrough" and method not in METHODS:
        raise EngineInputError(f"merge_method '{method}' has no Weightsmith equivalent "
                               f"(supported: passthrough, {', '.join(METHODS)})")
    glob = _mapping(config.get("parameters"), f"'parameters'{doc.at('parameters')}")
    base_ref = config.get("base_model")
    base_id = builder.model(base_ref) if base_ref is not None else None
    parts: list[tuple[str, int, int]] = []  # (node, start, end) of the output stack
    for k, sl in enumerate(slices):
        where = f"slice {k + 1}{doc.at_slice(k)}"
        if not isinstance(sl, dict) or not isinstance(sl.get("sources"), list) or not sl["sources"]:
            raise EngineInputError(f"{where} needs 'sources': a list of {{model, layer_range}}")
        unknown = sorted(set(sl) - _SLICE_KEYS, key=str)
        if unknown:
            raise EngineInputError(f"'{unknown[0]}' in {where} does not map to Weightsmith "
                                   f"(a slice takes {', '.join(sorted(_SLICE_KEYS))})")
        sources = [_slice_source(doc, builder, k, i, src) for i, src in enumerate(sl["sources"])]
        if method == "passthrough":
            if len(sources) != 1:
                raise EngineInputError(f"{where}: passthrough copies one model's layers, this slice has "
                                       f"{len(sources)} sources (merge them with another merge_method)")
            parts.append(_passthrough_slice(builder, out_id, k, where, sources[0], sl, glob))
            continue
        lengths = {end - start for _, start, end, _ in sources}
        if len(lengths) > 1:
            raise EngineInputError(f"{where}: its sources take different numbers of layers ({sorted(lengths)}); "
                                   "mergekit merges layer by layer")
        merge_id = out_id if len(slices) == 1 else builder.new_id(f"{'merge' if out_id == 'stack' else out_id}_{k + 1}")
        builder.reserved.add(merge_id)
        inputs = []
        slice_base = sl.get("base_model", base_ref)
        slice_base_id = builder.model(slice_base) if slice_base is not None else None
        merge_base = None
        for (model_id, start, end, own), src in zip(sources, sl["sources"]):
            stack_id = builder.new_id(f"{merge_id}_{model_id}")
            builder.nodes.append({"id": stack_id, "type": "stack", "params": {"slices": f"{model_id}[{start}:{end}]"}})
            builder.edges.append({"from": model_id, "to": stack_id, "port": "models"})
            inputs.append((stack_id, src.get("model"), own))
            if model_id == slice_base_id and merge_base is None:
                merge_base = stack_id
        if slice_base_id is not None and merge_base is None:
            raise EngineInputError(f"{where}: the base model '{slice_base}' is not one of its sources")
        scopes = [_mapping(sl.get("parameters"), f"'parameters' of {where}"), glob]
        _add_merge(builder, merge_id, method, inputs, merge_base, scopes, [f"'parameters' of {where}", "parameters"])
        parts.append((merge_id, 0, lengths.pop()))
    if method == "passthrough" or len(slices) > 1:
        text = ", ".join(f"{nid}[{start}:{end}]" for nid, start, end in parts)
        builder.nodes.append({"id": out_id, "type": "stack", "params": {"slices": text}})
        builder.edges += [{"from": nid, "to": out_id, "port": "models"} for nid in dict.fromkeys(p[0] for p in parts)]
    return base_id


def _passthrough_slice(builder: "_Builder", out_id: str, k: int, where: str, source: tuple[str, int, int, dict],
                       sl: dict, glob: dict) -> tuple[str, int, int]:
    """(node, start, end) of a passthrough slice in the output stack. mergekit's passthrough ``scale``
    (from the source's, the slice's or the top-level ``parameters``; filters and gradients over the
    slice allowed) becomes a linear merge without normalising, weight = scale, over a stack of the range."""
    model_id, start, end, own = source
    scopes = [(own, f"parameters of source 1 of {where}"),
              (_mapping(sl.get("parameters"), f"'parameters' of {where}"), f"'parameters' of {where}"),
              (glob, "parameters")]
    for scope, scope_where in scopes:
        _check_known(scope, {"scale": None}, "passthrough", scope_where)
    if all(scope.get("scale") is None for scope, _ in scopes):
        return model_id, start, end
    scale_id = builder.new_id(f"{'scale' if out_id == 'stack' else out_id + '_scale'}_{k + 1}")
    builder.reserved.add(scale_id)
    stack_id = builder.new_id(f"{scale_id}_{model_id}")
    weight = _chain("scale", [scope.get("scale") for scope, _ in scopes], 1.0, f"source 1 of {where}")
    builder.nodes.append({"id": stack_id, "type": "stack", "params": {"slices": f"{model_id}[{start}:{end}]"}})
    builder.nodes.append({"id": scale_id, "type": "merge",
                          "params": {"method": "linear", "normalize": False, "weight": {stack_id: weight}}})
    builder.edges += [{"from": model_id, "to": stack_id, "port": "models"},
                      {"from": stack_id, "to": scale_id, "port": "models"}]
    return scale_id, 0, end - start


def _slice_source(doc: _Document, builder: "_Builder", k: int, i: int, src: Any) -> tuple[str, int, int, dict]:
    """(model node, start, end, own parameters) of source ``i`` of slice ``k``; a layer range the model does
    not have is refused here when the model is a checkpoint (an intermediate's is checked by validation)."""
    where = f"source {i + 1} of slice {k + 1}{doc.at_slice(k, i)}"
    if not isinstance(src, dict) or "model" not in src:
        raise EngineInputError(f"{where} needs a 'model'")
    unknown = sorted(set(src) - _SOURCE_KEYS, key=str)
    if unknown:
        raise EngineInputError(f"'{unknown[0]}' in {where} does not map to Weightsmith")
    span = src.get("layer_range")
    if (not isinstance(span, (list, tuple)) or len(span) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in span)):
        raise EngineInputError(f"{where}: 'layer_range' must be [start, end] (whole numbers, the end excluded)")
    start, end = span
    if start < 0 or end <= start:
        raise EngineInputError(f"{where}: layer_range [{start}, {end}] is empty or starts before layer 0 "
                               "(the end is excluded)")
    model_id = builder.model(src["model"])
    count = builder.layer_count(model_id)
    if count is not None and end > count:
        raise EngineInputError(f"{where}: layer_range [{start}, {end}] asks for layers {start}–{end - 1}, but "
                               f"'{src['model']}' has {count} layers (0–{count - 1})")
    return model_id, start, end, _mapping(src.get("parameters"), f"'parameters' of {where}")


def _reject_unmapped(config: dict) -> None:
    for key, why in (("modules", "per-module configs"), ("chat_template", "chat templates")):
        if config.get(key):
            raise EngineInputError(f"mergekit '{key}' does not map to a Weightsmith recipe: {why} are not supported")
    unknown = sorted(set(config) - _TOP_KEYS, key=str)
    if unknown:
        raise EngineInputError(f"unknown mergekit config key '{unknown[0]}'")
    if not config.get("models") and not config.get("slices"):
        raise EngineInputError("the mergekit config lists no 'models' (or 'slices')")


def _model_entries(models: Any) -> list[tuple[Any, dict]]:
    if not isinstance(models, list):
        raise EngineInputError("'models' must be a list of {model: ..., parameters: ...}")
    out = []
    for i, item in enumerate(models):
        if not isinstance(item, dict) or "model" not in item:
            raise EngineInputError(f"entry {i + 1} of 'models' needs a 'model' key, got {type(item).__name__}")
        out.append((item["model"], _mapping(item.get("parameters"), f"'parameters' of entry {i + 1} of 'models'")))
    return out


def _mapping(value: Any, what: str) -> dict:
    """A parameters mapping (absent means empty); anything else is refused naming ``what``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EngineInputError(f"{what} must be a mapping of parameter names to values, got {type(value).__name__}")
    return value


def _check_known(values: Mapping[str, Any], spec: Mapping[str, Any], method: str, where: str) -> None:
    for key in values:
        if key not in spec:
            raise EngineInputError(f"'{key}' in {where} is not a parameter of mergekit's {method} "
                                   f"(known: {', '.join(spec)})")


def _shared_param(method: str, name: str, settings: list[Any], default: Any) -> dict[str, Any]:
    """One shared parameter from its settings, innermost scope first (the first that is set decides)."""
    value = next((v for v in settings if v is not None), None)
    if value is None:
        if default is REQUIRED:
            raise EngineInputError(f"mergekit's {method} needs the parameter '{name}'")
        value = default
    if name == "rescale":
        if _is_schedule(value):
            raise EngineInputError("'rescale' cannot vary per layer in Weightsmith")
        return {"rescale": "l1" if value else "none"}
    if name in ("normalize", "filter_wise", "nuslerp_row_wise", "nuslerp_flatten") and _is_schedule(value):
        raise EngineInputError(f"'{name}' cannot vary per layer in Weightsmith")
    return {name: _chain(name, settings, default, "parameters")}


def _is_schedule(value: Any) -> bool:
    return isinstance(value, (list, dict))


def _chain(name: str, settings: list[Any], default: Any, where: str) -> Any:
    """mergekit's precedence (first scope whose conditions match) as one Weightsmith value."""
    entries: list[tuple[str | None, Any]] = []
    for setting in settings:
        if setting is None:
            continue
        conds = [setting] if isinstance(setting, dict) else setting
        if isinstance(conds, list) and conds and all(isinstance(c, dict) for c in conds):
            for cond in conds:
                if "value" not in cond:
                    raise EngineInputError(f"conditional '{name}' in {where} has no 'value'")
                flt = cond.get("filter")
                if flt is None or flt == "*":
                    entries.append((None, cond["value"]))
                    return _finish(entries)
                entries.append((re.escape(str(flt)), cond["value"]))
        else:
            entries.append((None, setting))
            return _finish(entries)
    if default is REQUIRED:
        raise EngineInputError(f"'{name}' is required for {where} (mergekit has no default for it)")
    entries.append((None, default))
    return _finish(entries)


def _finish(entries: list[tuple[str | None, Any]]) -> Any:
    if len(entries) == 1:
        return entries[0][1]
    return [{"filter": f, "value": v} if f is not None else {"value": v} for f, v in entries]


class _Builder:
    """Checkpoint nodes (and LoRA ``add`` nodes) for model references, one per distinct reference; a
    reference to another document's ``name`` (``outputs``: name → its output node) is that node.
    ``reserved`` ids are kept for nodes made later; ``multi``: the config has several documents."""

    def __init__(self, base_dir: Path, multi: bool = False):
        self.base_dir = base_dir
        self.multi = multi
        self.nodes: list[dict] = []
        self.edges: list[dict] = []
        self.outputs: dict[str, str] = {}
        self.reserved: set[str] = set()
        self._ids: dict[str, str] = {}
        self._layers: dict[str, int | None] = {}

    def model(self, ref: Any) -> str:
        model, lora = _parse_ref(ref)
        key = f"{model}+{lora}" if lora else model
        if key in self._ids:
            return self._ids[key]
        model_id = self.outputs[model] if model in self.outputs else self._checkpoint(model)
        if lora:
            lora_id = self._checkpoint(lora)
            nid = self._new_id(f"{model_id}_{lora_id}")
            self.nodes.append({"id": nid, "type": "add", "params": {}})
            self.edges += [{"from": model_id, "to": nid, "port": "inputs"},
                           {"from": lora_id, "to": nid, "port": "inputs"}]
            model_id = nid
        self._ids[key] = model_id
        return model_id

    def _checkpoint(self, path_text: str) -> str:
        if path_text in self._ids:
            return self._ids[path_text]
        path = Path(path_text).expanduser()
        path = path if path.is_absolute() else (self.base_dir / path)
        try:
            found = path.exists()
        except OSError as exc:  # a name too long for the file system
            raise EngineInputError(f"model path '{path_text[:200]}' cannot be used ({exc.strerror or exc})") from exc
        if not found:
            named = "; no document of this config is named so either" if self.multi else ""
            raise EngineInputError(f"model '{path_text}' not found at {path}: Weightsmith reads local checkpoints "
                                   f"only (download Hub models first and point the config at the folder){named}")
        nid = self._new_id(re.sub(r"[^A-Za-z0-9_-]+", "_", path.name) or "model")
        self.nodes.append({"id": nid, "type": "checkpoint", "params": {"path": str(path.resolve())}})
        self._ids[path_text] = nid
        return nid

    def _new_id(self, stem: str) -> str:
        taken = {n["id"] for n in self.nodes} | {"merge", "save"} | self.reserved
        nid, i = stem, 2
        while nid in taken:
            nid, i = f"{stem}_{i}", i + 1
        return nid

    new_id = _new_id

    def layer_count(self, model_id: str) -> int | None:
        """Numbered layers of a checkpoint node's model (a LoRA-combined one's model), read from its headers;
        None for another document's output or a file that cannot be opened (validation reports it)."""
        node = next((n for n in self.nodes if n["id"] == model_id), None)
        if node is not None and node["type"] == "add":
            first = next(e["from"] for e in self.edges if e["to"] == model_id)
            node = next(n for n in self.nodes if n["id"] == first)
        if node is None or node["type"] != "checkpoint":
            return None
        path = node["params"]["path"]
        if path not in self._layers:
            try:
                with open_checkpoint(path) as ckpt:
                    self._layers[path] = num_layers(ckpt.names)
            except EngineInputError:
                self._layers[path] = None
        return self._layers[path]


def _parse_ref(ref: Any) -> tuple[str, str | None]:
    if isinstance(ref, dict):
        model, lora = ref.get("model"), ref.get("lora")
        if ref.get("override_architecture"):
            raise EngineInputError("'override_architecture' does not map to Weightsmith")
        return _path_of(model), (_path_of(lora) if lora else None)
    if not isinstance(ref, str):
        raise EngineInputError(f"cannot read model reference {ref!r}")
    parts = ref.split("+")
    if len(parts) > 2:
        raise EngineInputError(f"cannot parse model reference '{ref}'")
    return _path_of(parts[0]), (_path_of(parts[1]) if len(parts) == 2 else None)


def _path_of(value: Any) -> str:
    if isinstance(value, dict):
        if value.get("revision"):
            raise EngineInputError(f"model revision '{value['revision']}' refers to the Hugging Face Hub; "
                                   "Weightsmith reads local checkpoints only")
        value = value.get("path")
    if not isinstance(value, str) or not value or "\0" in value:
        shown = repr(value) if isinstance(value, str) or value is None else f"a {type(value).__name__}"
        raise EngineInputError(f"cannot read model path {shown}")
    if "@" in value:
        raise EngineInputError(f"'{value}' names a Hub revision (@); Weightsmith reads local checkpoints only")
    return value


def _save_params(config: dict, builder: _Builder, base_id: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {"path": "merged"}
    dtype = config.get("out_dtype") or config.get("dtype")
    if dtype is not None:
        if str(dtype) not in _DTYPES:
            raise EngineInputError(f"dtype '{dtype}' has no Weightsmith equivalent (use float16, bfloat16 or float32)")
        params["dtype"] = _DTYPES[str(dtype)]
    source = config.get("tokenizer_source")
    tokenizer = config.get("tokenizer")
    if tokenizer is not None:
        if source is not None:
            raise EngineInputError("mergekit takes either 'tokenizer_source' or a 'tokenizer' block, not both")
        if not isinstance(tokenizer, dict):
            raise EngineInputError(f"'tokenizer' must be a mapping (source, tokens…), got {type(tokenizer).__name__}")
        unmapped = [k for k in tokenizer if k != "source" and tokenizer[k] is not None]
        if unmapped:
            raise EngineInputError(f"mergekit 'tokenizer.{unmapped[0]}' does not map to Weightsmith: per-token "
                                   "embedding sources ('tokens', 'force') and 'pad_to_multiple_of' are not "
                                   "supported (a token a model lacks takes mergekit's default row)")
        source = tokenizer.get("source", "union")
    if source == "union":
        params["tokenizer_source"] = "union"
    elif source == "base":
        if base_id is None:
            raise EngineInputError("'tokenizer_source: base' needs a base_model")
        params["copy_files_from"] = base_id
    elif source is not None:
        nid = builder.model(source)
        if any(n["id"] == nid and n["type"] != "checkpoint" for n in builder.nodes):
            raise EngineInputError(f"tokenizer source '{source}' combines a model with a LoRA; name a model folder")
        params["tokenizer_source"] = nid
    return params


# ---- export -------------------------------------------------------------------------------------

def export_mergekit(recipe: dict) -> str:
    """Translate a recipe JSON dict into mergekit YAML: its saved model (or its one final merge or layer
    stack) as the last document, every merge or stack it uses as another document's output before it
    (mergekit-multi, each ``name``d after its node). A merge over single-slice stacks is a ``slices:``
    document; a stack whose slices are such merges over the whole of them, all of one method, is one
    too; any other stack is ``passthrough``."""
    nodes = {n["id"]: n for n in recipe.get("nodes", [])}
    edges = recipe.get("edges", [])
    by_type: dict[str, list[str]] = {}
    for nid, node in nodes.items():
        by_type.setdefault(node["type"], []).append(nid)
    unsupported = sorted(set(by_type) - {"checkpoint", "merge", "save", "add", "evaluate", "stack"})
    if unsupported:
        raise EngineInputError(f"'{unsupported[0]}' nodes have no mergekit equivalent")
    save_ids = by_type.get("save", [])
    exporter = _Exporter(nodes, edges)
    if len(save_ids) > 1:
        raise EngineInputError(f"mergekit YAML describes one saved model; this recipe has {len(save_ids)} save nodes")
    if save_ids:
        final = exporter.inputs(save_ids[0], "model")[0]
    else:
        tops = [n for n in [*by_type.get("merge", []), *by_type.get("stack", [])]
                if not any(e["from"] == n and nodes[e["to"]]["type"] in ("merge", "stack", "add") for e in edges)]
        if len(tops) != 1:
            raise EngineInputError("mergekit YAML describes one final merge; this recipe has "
                                   f"{len(tops)} merge or stack nodes that nothing else uses")
        final = tops[0]
    if nodes[final]["type"] not in ("merge", "stack"):
        raise EngineInputError(f"the saved model '{final}' is not a merge or a layer stack; mergekit has nothing to do")
    config, base_id = exporter.document(final)
    unused = [n for n in [*by_type.get("merge", []), *by_type.get("stack", [])] if n not in exporter.used]
    if unused:
        raise EngineInputError(f"node '{unused[0]}' does not feed the saved model: mergekit YAML describes exactly "
                               "one merge (with the merges and stacks it uses)")
    if save_ids:
        _export_save(config, nodes[save_ids[0]].get("params", {}), base_id, exporter.ref)
    documents = [*exporter.documents, config]
    if len(documents) == 1:
        return yaml.safe_dump(config, sort_keys=False, default_flow_style=None)
    return yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=None)


def _export_save(config: dict, save: dict, base_id: str | None, path) -> None:
    """The save node's settings (dtype, tokenizer) on the final document; ``base_id`` is the node its
    ``base_model`` names, ``path`` gives a node's model reference."""
    base_ids = [base_id] if base_id else []
    dtype = save.get("dtype", "auto")
    if dtype != "auto":
        config["dtype"] = "float32"
        config["out_dtype"] = _EXPORT_DTYPES[dtype]
    source = save.get("copy_files_from")
    vocabulary = save.get("tokenizer_source") or "base"
    if vocabulary != "base":
        if source and not (base_ids and source == base_ids[0]):
            raise EngineInputError("copy_files_from and tokenizer_source name different models; mergekit "
                                   "takes its config from the base and only the tokenizer from the source")
        config["tokenizer_source"] = ("union" if vocabulary == "union" else
                                      "base" if base_ids and vocabulary == base_ids[0] else path(vocabulary))
    elif source:
        config["tokenizer_source"] = "base" if base_ids and source == base_ids[0] else path(source)


class _Exporter:
    """Builds mergekit documents from a recipe's nodes: ``document(nid)`` gives the document making a merge
    or stack node; the merges and stacks it uses as models become ``documents`` (named, in dependency
    order); ``used`` holds every merge and stack node a document describes."""

    def __init__(self, nodes: dict[str, dict], edges: list[dict]):
        self.nodes, self.edges = nodes, edges
        self.documents: list[dict] = []
        self.used: set[str] = set()
        self._named: dict[str, str] = {}
        self._making: list[str] = []

    def inputs(self, nid: str, port: str) -> list[str]:
        return [e["from"] for e in self.edges if e["to"] == nid and e["port"] == port]

    def ref(self, nid: str) -> str:
        """A node as a mergekit model reference: a path, ``model+lora``, or another document's name."""
        node = self.nodes[nid]
        if node["type"] == "checkpoint":
            return str(node["params"]["path"])
        parts = self.inputs(nid, "inputs") if node["type"] == "add" else []
        if len(parts) == 2 and all(self.nodes[p]["type"] == "checkpoint" for p in parts):
            return f"{self.ref(parts[0])}+{self.ref(parts[1])}"
        if node["type"] in ("merge", "stack"):
            if nid not in self._named:
                if nid in self._making:
                    raise EngineInputError(f"node '{nid}' is on a cycle")
                self._making.append(nid)
                config, _ = self.document(nid)
                self._making.pop()
                self.documents.append({"name": nid, **config})
                self._named[nid] = nid
            return self._named[nid]
        raise EngineInputError(f"node '{nid}' ({node['type']}) cannot be a mergekit model reference")

    def document(self, nid: str) -> tuple[dict, str | None]:
        """The config making node ``nid`` and the node its ``base_model`` names (for ``tokenizer_source: base``)."""
        self.used.add(nid)
        if self.nodes[nid]["type"] == "merge":
            sources = self._slice_sources(nid)
            if sources is None:
                parts = self._merge_parts(nid, lambda m: {"model": self.ref(m)})
                config = {k: parts[k] for k in ("base_model", "models", "merge_method", "parameters") if k in parts}
                return config, parts.get("base_node")
            parts = self._merge_parts(nid, sources.__getitem__, in_sources=True)
            config = {"slices": [{"sources": parts["models"]}], "merge_method": parts["merge_method"]}
            config.update({k: parts[k] for k in ("base_model", "parameters") if k in parts})
            return config, parts.get("base_node")
        return self._stack_document(nid)

    def _slice_plan(self, merge_id: str) -> dict[str, tuple[str, list[int]]] | None:
        """When every input of a merge is a one-slice stack of a model, all as deep: each input's (model node,
        layer range); else None."""
        out: dict[str, tuple[str, list[int]]] = {}
        for src in [*self.inputs(merge_id, "base"), *self.inputs(merge_id, "models")]:
            node = self.nodes[src]
            if node["type"] != "stack":
                return None
            try:
                slices = parse_slices(node["params"].get("slices", ""))
            except EngineInputError:
                return None
            if len(slices) != 1 or node["params"].get("non_layer_from") not in (None, "", slices[0].input):
                return None
            out[src] = (slices[0].input, [slices[0].start, slices[0].end])
        if not out or len({end - start for _, (start, end) in out.values()}) != 1:
            return None
        return out

    def _slice_sources(self, merge_id: str) -> dict[str, dict] | None:
        """``_slice_plan`` as mergekit slice sources (``{model, layer_range}``), the stacks marked described."""
        plan = self._slice_plan(merge_id)
        if plan is None:
            return None
        self.used.update(plan)
        return {src: {"model": self.ref(model), "layer_range": span} for src, (model, span) in plan.items()}

    def _merge_parts(self, merge_id: str, entry, in_sources: bool = False) -> dict[str, Any]:
        """A merge node as mergekit's merge_method, models (``entry(input)`` each, with their per-model
        parameters), shared parameters and base model; in slices (``in_sources``) the base is a source."""
        params = dict(self.nodes[merge_id].get("params", {}))
        method = params.pop("method", None)
        if method not in METHODS:
            raise EngineInputError(f"method '{method}' of node '{merge_id}' has no mergekit equivalent")
        spec = get_method(method)
        values = {**spec.defaults(), **params}
        model_ids = self.inputs(merge_id, "models")
        base_ids = self.inputs(merge_id, "base")
        shared_spec, model_spec = METHODS[method]
        models = [dict(entry(nid)) for nid in model_ids]
        for name in model_spec:
            if model_spec[name] is IGNORED:
                continue
            per_model = _per_model(values[name], model_ids, spec.param(name).default)
            for item, value in zip(models, per_model):
                item.setdefault("parameters", {})[name] = _export_value(name, value)
        shared: dict[str, Any] = {}
        for name in shared_spec:
            if name == "int8_mask" or (name == "rescale" and method in _NO_RESCALE):
                continue
            shared[name] = _export_value(name, values[name])
        _reject_weightsmith_only(values)
        out: dict[str, Any] = {"merge_method": method}
        if base_ids and method == "karcher":
            models.append(dict(entry(base_ids[0])))
        elif base_ids and method != "linear":
            base = dict(entry(base_ids[0]))
            out["base_model"] = base["model"]
            out["base_node"] = base_ids[0] if not in_sources else self._stacked_model(base_ids[0])
            if method == "slerp" or in_sources:
                models.insert(0, base)
        out["models"] = models
        if shared:
            out["parameters"] = shared
        return out

    def _scaled_source(self, s: Slice) -> dict | None:
        """A passthrough source with ``scale`` when the slice takes the whole of a linear merge without
        normalising of one single-slice stack (what importing ``scale`` makes), else None."""
        node = self.nodes[s.input]
        params = node.get("params", {})
        if node["type"] != "merge" or params.get("method") != "linear" or params.get("normalize") is not False:
            return None
        models = self.inputs(s.input, "models")
        if len(models) != 1 or self.inputs(s.input, "base"):
            return None
        sources = self._slice_plan(s.input)
        if sources is None or s.start != 0 or s.end != _depth(sources):
            return None
        self.used.update((s.input, models[0]))
        model, span = sources[models[0]]
        weight = _per_model(params.get("weight", 1.0), models, 1.0)[0]
        return {"model": self.ref(model), "layer_range": span, "parameters": {"scale": _export_value("scale", weight)}}

    def _stacked_model(self, stack_id: str) -> str:
        """The node a one-slice stack takes its layers from."""
        return parse_slices(self.nodes[stack_id]["params"]["slices"])[0].input

    def _stack_document(self, stack_id: str) -> tuple[dict, str | None]:
        params = self.nodes[stack_id].get("params", {})
        slices = parse_slices(params.get("slices", ""))
        chosen = params.get("non_layer_from") or ""
        if chosen and not (chosen == slices[0].input == slices[-1].input):
            raise EngineInputError(f"stack '{stack_id}' takes its non-layer tensors from '{chosen}'; mergekit takes "
                                   "the embeddings from the first slice's model and the LM head from the last's")
        scaled = [self._scaled_source(s) for s in slices]
        if any(scaled):
            return {"slices": [{"sources": [src or {"model": self.ref(s.input), "layer_range": [s.start, s.end]}]}
                               for src, s in zip(scaled, slices)], "merge_method": "passthrough"}, None
        merged = [self._slice_plan(s.input) if self.nodes[s.input]["type"] == "merge" else None for s in slices]
        methods = {self.nodes[s.input]["params"].get("method") for s in slices}
        whole = all(m is not None and s.start == 0 and s.end == _depth(m) for m, s in zip(merged, slices))
        if whole and len(methods) == 1:
            out_slices, shared, bases = [], [], []
            for s in slices:
                self.used.add(s.input)
                parts = self._merge_parts(s.input, self._slice_sources(s.input).__getitem__, in_sources=True)
                out_slices.append({"sources": parts["models"]})
                shared.append(parts.get("parameters"))
                bases.append((parts.get("base_model"), parts.get("base_node")))
            config: dict[str, Any] = {"slices": out_slices, "merge_method": methods.pop()}
            if len({repr(b) for b in bases}) == 1:
                if bases[0][0] is not None:
                    config["base_model"] = bases[0][0]
            else:
                for item, (ref, _) in zip(out_slices, bases):
                    if ref is not None:
                        item["base_model"] = ref
            if len({repr(p) for p in shared}) == 1:
                if shared[0]:
                    config["parameters"] = shared[0]
            else:
                for item, p in zip(out_slices, shared):
                    if p:
                        item["parameters"] = p
            return config, bases[0][1]
        return {"slices": [{"sources": [{"model": self.ref(s.input), "layer_range": [s.start, s.end]}]}
                           for s in slices], "merge_method": "passthrough"}, None


def _depth(sources: dict[str, Any]) -> int:
    """How many layers the one-slice stacks feeding a merge take (the same for all), from ``_slice_plan``
    or ``_slice_sources``."""
    first = next(iter(sources.values()))
    start, end = first["layer_range"] if isinstance(first, dict) else first[1]
    return end - start


def _per_model(value: Any, keys: list[str], default: Any) -> list[Any]:
    if isinstance(value, dict):
        return [value.get(k, default) for k in keys]
    if isinstance(value, (list, tuple)):
        if len(value) != len(keys):
            raise EngineInputError(f"{len(value)} per-model values for {len(keys)} models")
        return list(value)
    return [value] * len(keys)


def _export_value(name: str, value: Any) -> Any:
    if name == "rescale":
        if value == "inverse":
            raise EngineInputError("rescale 'inverse' (divide by the keep probability) has no mergekit equivalent; "
                                   "use 'l1' (mergekit's rescale: true) or 'none'")
        return value == "l1"
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return [{"filter": _substring(v["filter"]), "value": _export_value(name, v["value"])} if v.get("filter")
                else {"value": _export_value(name, v["value"])} for v in value]
    return value


def _substring(pattern: str) -> str:
    """A regular expression that is a plain substring (escaped characters allowed; '.' read literally)."""
    text = re.sub(r"\\(.)", r"\1", pattern)
    unescaped = re.sub(r"\\.", "", pattern)
    if re.search(r"[\^$*+?{}\[\]|()]", unescaped):
        raise EngineInputError(f"filter '{pattern}' is a regular expression; mergekit filters are plain substrings")
    return text


def _reject_weightsmith_only(values: Mapping[str, Any]) -> None:
    if values.get("scope") == "model":
        raise EngineInputError("scope 'model' (whole-model thresholds) has no mergekit equivalent")
