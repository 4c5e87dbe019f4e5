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
- ``tokenizer_source: base`` (or a model's path, or ``tokenizer: {source: …}`` without ``tokens``)
  maps to the save node's ``copy_files_from``.

What does not map (``EngineInputError`` names it): ``slices`` and ``modules`` (layer-range
frankenmerges, passthrough), other merge methods, ``tokenizer_source: union`` and token surgery,
``chat_template``, Hub revisions (``model@rev``), ``rescale: true`` for ``ties`` and ``task_arithmetic``
(mergekit's ties can L1-rescale its trimmed vectors; Weightsmith's ties does not), unknown parameters.
On export, additionally: graphs other than checkpoints (+ LoRA ``add``) → one merge → one save,
Weightsmith-only methods and options (``scope: model``, ``rescale: inverse``), regular expressions that
are not plain substrings (an unescaped ``.`` is read as a literal dot). The DARE/DELLA ``seed`` is
dropped on export (mergekit draws from torch's global generator).

Hostile YAML is refused before it costs anything: nesting deeper than 64 levels, or aliases that would
expand to more than 100,000 values ("billion laughs") or contain themselves.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import yaml

from engine.errors import EngineInputError
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
             "tokenizer", "chat_template", "slices", "modules"}
_MAX_YAML_NODES = 100_000  # values in a config once every alias is expanded (real configs hold hundreds)
_MAX_YAML_DEPTH = 64


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses deep nesting while composing and alias bombs (aliases whose
    expansion would exceed ``_MAX_YAML_NODES`` values, or that contain themselves) before building."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        self.key_lines: dict[str, int] = {}

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
        if isinstance(node, yaml.MappingNode):
            self.key_lines = {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
        return super().construct_document(node)


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


def _load_yaml(yaml_text: str) -> tuple[Any, dict[str, int]]:
    """The parsed config and the line of each top-level key."""
    loader = _BoundedLoader(yaml_text)
    try:
        return loader.get_single_data(), loader.key_lines
    except yaml.YAMLError as exc:
        raise EngineInputError(f"not valid YAML ({exc})") from exc
    except RecursionError as exc:  # a nesting _BoundedLoader did not see (deep flow collections in the parser)
        raise EngineInputError("not readable YAML: nested too deeply") from exc
    finally:
        loader.dispose()


def import_mergekit(yaml_text: str, base_dir: Path) -> dict:
    """Translate a mergekit YAML config into a recipe JSON dict (checkpoint nodes, one merge, one save)."""
    config, lines = _load_yaml(yaml_text)
    if not isinstance(config, dict):
        raise EngineInputError("a mergekit config must be a YAML mapping")

    def at(key: str) -> str:
        return f" (line {lines[key]})" if key in lines else ""

    _reject_unmapped(config)
    method = config.get("merge_method")
    if not isinstance(method, str):
        raise EngineInputError(f"'merge_method' must be a method name, got {type(method).__name__}{at('merge_method')}")
    if method not in METHODS:
        raise EngineInputError(f"merge_method '{method}' has no Weightsmith equivalent "
                               f"(supported: {', '.join(METHODS)})")
    shared_spec, model_spec = METHODS[method]
    builder = _Builder(Path(base_dir))
    base_ref = config.get("base_model")
    base_id = builder.model(base_ref) if base_ref is not None else None
    entries = _model_entries(config.get("models"))
    inputs = [(builder.model(ref), ref, params) for ref, params in entries]
    if method in _BASE_IS_A_MODEL:
        if base_id is not None and base_id not in [i for i, _, _ in inputs]:
            inputs.append((base_id, base_ref, {}))
        base_id = None
    else:
        inputs = [x for x in inputs if x[0] != base_id]
    glob = _mapping(config.get("parameters"), f"'parameters'{at('parameters')}")
    _check_known(glob, {**shared_spec, **model_spec}, method, "parameters")
    params: dict[str, Any] = {"method": method}
    for name, default in shared_spec.items():
        if name == "rescale" and method in _NO_RESCALE:
            if glob.get(name):
                raise EngineInputError(f"'rescale: true' for {method} (L1 rescaling of trimmed task vectors) "
                                       "has no Weightsmith equivalent")
            continue
        if default is not IGNORED:
            params.update(_shared_param(method, name, glob.get(name), default))
    for name, default in model_spec.items():
        if default is IGNORED:
            continue
        params[name] = {nid: _chain(name, [own.get(name), glob.get(name)], default, f"model '{ref}'")
                        for nid, ref, own in inputs}
    for nid, ref, own in inputs:
        _check_known(own, {**shared_spec, **model_spec}, method, f"parameters of model '{ref}'")
    if any(p.name == "tie_break" for p in get_method(method).params):
        params["tie_break"] = "mergekit"  # equal magnitudes at a trim cut split as mergekit splits them
    nodes = builder.nodes + [{"id": "merge", "type": "merge", "params": params}]
    edges = builder.edges + ([{"from": base_id, "to": "merge", "port": "base"}] if base_id else [])
    edges += [{"from": nid, "to": "merge", "port": "models"} for nid, _, _ in inputs]
    nodes.append({"id": "save", "type": "save", "params": _save_params(config, builder, base_id)})
    edges.append({"from": "merge", "to": "save", "port": "model"})
    return {"format": "weightsmith-recipe", "version": 1, "name": "imported from mergekit",
            "nodes": nodes, "edges": edges}


def _reject_unmapped(config: dict) -> None:
    for key, why in (("slices", "layer slices (frankenmerges)"), ("modules", "per-module configs"),
                     ("chat_template", "chat templates")):
        if config.get(key):
            raise EngineInputError(f"mergekit '{key}' does not map to a Weightsmith recipe: {why} are not supported")
    unknown = sorted(set(config) - _TOP_KEYS, key=str)
    if unknown:
        raise EngineInputError(f"unknown mergekit config key '{unknown[0]}'")
    if not config.get("models"):
        raise EngineInputError("the mergekit config lists no 'models'")


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


def _shared_param(method: str, name: str, value: Any, default: Any) -> dict[str, Any]:
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
    return {name: _chain(name, [value], default, "parameters")}


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
    """Checkpoint nodes (and LoRA ``add`` nodes) for model references, one per distinct reference."""

    def __init__(self, base_dir: Path):
        self.base_dir = base_dir
        self.nodes: list[dict] = []
        self.edges: list[dict] = []
        self._ids: dict[str, str] = {}

    def model(self, ref: Any) -> str:
        model, lora = _parse_ref(ref)
        key = f"{model}+{lora}" if lora else model
        if key in self._ids:
            return self._ids[key]
        model_id = self._checkpoint(model)
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
            raise EngineInputError(f"model '{path_text}' not found at {path}: Weightsmith reads local checkpoints "
                                   "only (download Hub models first and point the config at the folder)")
        nid = self._new_id(re.sub(r"[^A-Za-z0-9_-]+", "_", path.name) or "model")
        self.nodes.append({"id": nid, "type": "checkpoint", "params": {"path": str(path.resolve())}})
        self._ids[path_text] = nid
        return nid

    def _new_id(self, stem: str) -> str:
        taken = {n["id"] for n in self.nodes} | {"merge", "save"}
        nid, i = stem, 2
        while nid in taken:
            nid, i = f"{stem}_{i}", i + 1
        return nid


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
        if not isinstance(tokenizer, dict) or set(tokenizer) - {"source"}:
            raise EngineInputError("mergekit 'tokenizer' options beyond 'source' (token surgery, padding) "
                                   "do not map to Weightsmith")
        source = tokenizer.get("source", "union")
    if source == "union":
        raise EngineInputError("'tokenizer_source: union' (a merged vocabulary) does not map to Weightsmith")
    if source == "base":
        if base_id is None:
            raise EngineInputError("'tokenizer_source: base' needs a base_model")
        params["copy_files_from"] = base_id
    elif source is not None:
        params["copy_files_from"] = builder.model(source)
    return params


# ---- export -------------------------------------------------------------------------------------

def export_mergekit(recipe: dict) -> str:
    """Translate a recipe JSON dict (checkpoints → one merge → one save) into mergekit YAML."""
    nodes = {n["id"]: n for n in recipe.get("nodes", [])}
    edges = recipe.get("edges", [])
    by_type: dict[str, list[str]] = {}
    for nid, node in nodes.items():
        by_type.setdefault(node["type"], []).append(nid)
    unsupported = sorted(set(by_type) - {"checkpoint", "merge", "save", "add", "evaluate"})
    if unsupported:
        raise EngineInputError(f"'{unsupported[0]}' nodes have no mergekit equivalent")
    if len(by_type.get("merge", [])) != 1 or len(by_type.get("save", [])) > 1:
        raise EngineInputError("mergekit YAML describes exactly one merge (and at most one save); this recipe has "
                               f"{len(by_type.get('merge', []))} merge and {len(by_type.get('save', []))} save nodes")
    merge_id = by_type["merge"][0]
    params = dict(nodes[merge_id].get("params", {}))
    method = params.pop("method", None)
    if method not in METHODS:
        raise EngineInputError(f"method '{method}' has no mergekit equivalent")

    def inputs(nid: str, port: str) -> list[str]:
        return [e["from"] for e in edges if e["to"] == nid and e["port"] == port]

    def path(nid: str) -> str:
        node = nodes[nid]
        if node["type"] == "checkpoint":
            return str(node["params"]["path"])
        parts = inputs(nid, "inputs") if node["type"] == "add" else []
        if len(parts) == 2 and all(nodes[p]["type"] == "checkpoint" for p in parts):
            return f"{path(parts[0])}+{path(parts[1])}"
        raise EngineInputError(f"node '{nid}' ({node['type']}) cannot be a mergekit model reference")

    spec = get_method(method)
    values = {**spec.defaults(), **params}
    model_ids = inputs(merge_id, "models")
    base_ids = inputs(merge_id, "base")
    shared_spec, model_spec = METHODS[method]
    config: dict[str, Any] = {}
    models = [{"model": path(nid)} for nid in model_ids]
    for name in model_spec:
        if model_spec[name] is IGNORED:
            continue
        per_model = _per_model(values[name], model_ids, spec.param(name).default)
        for entry, value in zip(models, per_model):
            entry.setdefault("parameters", {})[name] = _export_value(name, value)
    shared: dict[str, Any] = {}
    for name in shared_spec:
        if name == "int8_mask" or (name == "rescale" and method in _NO_RESCALE):
            continue
        shared[name] = _export_value(name, values[name])
    _reject_weightsmith_only(values)
    if base_ids and method == "karcher":
        models.append({"model": path(base_ids[0])})
    elif base_ids and method != "linear":
        config["base_model"] = path(base_ids[0])
        if method == "slerp":
            models.insert(0, {"model": config["base_model"]})
    config["models"] = models
    config["merge_method"] = method
    if shared:
        config["parameters"] = shared
    save_ids = by_type.get("save", [])
    if save_ids:
        save = nodes[save_ids[0]].get("params", {})
        dtype = save.get("dtype", "auto")
        if dtype != "auto":
            config["dtype"] = "float32"
            config["out_dtype"] = _EXPORT_DTYPES[dtype]
        source = save.get("copy_files_from")
        if source:
            config["tokenizer_source"] = "base" if base_ids and source == base_ids[0] else path(source)
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=None)


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
