"""The contract every merge method fulfils: a parameter schema, requirements, and a per-tensor function.

A method is a pure tensor function (no IO, no recipe). The executor calls it once per tensor name with
``MergeInputs`` (the base and the models' tensors, or their task vectors, on the compute device, fp32),
the method's parameters already resolved for that tensor (per-model values as lists aligned with the
inputs, per-layer schedules evaluated at the tensor's layer) and a ``TensorContext``.

Methods whose result needs whole-model statistics (a global top-k threshold, MetaGPT's norms) declare a
``statistic`` factory; the executor streams every tensor through it in one or more cheap first passes
and hands the result to the method as ``ctx.stats``. Methods that merge with statistics gathered on data
(Fisher, RegMean) declare a ``StatisticsFile``; the executor opens the file and hands the method each
tensor's per-model statistics as ``ctx.statistics``.

A method also declares how live tuning may update it incrementally (live tuning knows no method by
name): a linear form (``linear``, or ``contextual_linear`` when the coefficients depend on the tensor's
place or the inputs), or a ``StagedForm`` with cacheable intermediates.
"""

from __future__ import annotations

import hashlib
import math
import reprlib
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Hashable, Protocol, Sequence

import torch


class Requirement(str, Enum):
    """What a method needs beyond the weights; shown on the method's node."""

    DATA_FREE = "data-free"
    UNLABELED = "unlabeled data"
    LABELED = "labeled data"
    GRADIENTS = "gradients"


@dataclass(frozen=True)
class Param:
    """One declared parameter of a method: the GUI builds its control from this, the CLI its parsing.

    ``type`` is one of ``float``, ``int``, ``bool``, ``choice`` (one of ``choices``), ``str`` or ``path``
    (a file; a relative path is resolved against the recipe's folder before the method sees it).
    ``per_model`` parameters take one value per input model (a scalar applies to all);
    ``layerwise`` ones also accept a per-layer schedule (see ``engine.methods.schedule``).
    ``typical`` is the (low, high) span most useful values fall in (a GUI slider covers it; typing
    reaches the whole ``min``…``max`` range); None when it is the declared range.
    """

    name: str
    type: str
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    per_model: bool = False
    layerwise: bool = False
    typical: tuple[float, float] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "type": self.type, "default": self.default, "help": self.help,
            "min": self.min, "max": self.max, "choices": list(self.choices),
            "per_model": self.per_model, "layerwise": self.layerwise,
            "typical": list(self.typical) if self.typical is not None else None,
        }

    def check_scalar(self, value: Any) -> str | None:
        """Problem with one scalar value of this parameter, or None when it is valid."""
        if self.type == "bool":
            return None if isinstance(value, bool) else f"'{self.name}' must be true or false, got {shown(value)}"
        if self.type == "choice":
            return None if isinstance(value, str) and value in self.choices else (
                f"'{self.name}' must be one of {', '.join(self.choices)}, got {shown(value)}")
        if self.type in ("str", "path"):
            if isinstance(value, str) and not (self.type == "path" and "\0" in value):
                return None
            return f"'{self.name}' must be {'text' if self.type == 'str' else 'a file path'}, got {shown(value)}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"'{self.name}' must be a number, got {shown(value)}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"'{self.name}' must be finite, got {shown(value)}"
        if self.type == "int" and isinstance(value, float) and not value.is_integer():
            return f"'{self.name}' must be a whole number, got {shown(value)}"
        if self.min is not None and value < self.min:
            return f"'{self.name}' = {shown(value)} is below its minimum {self.min}"
        if self.max is not None and value > self.max:
            return f"'{self.name}' = {shown(value)} is above its maximum {self.max}"
        return None


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 3, 60, 60


def shown(value: Any) -> str:
    """A short printable form of a (possibly hostile) value for a message: long texts, deep or long
    lists and huge numbers are abbreviated."""
    try:
        return _SHORT.repr(value)
    except ValueError:  # an integer with too many digits to print
        return "a value too large to print"


class TensorStatistics(Protocol):
    """The per-model statistics of one tensor, read from the file a method's ``StatisticsFile`` names.

    The executor opens the file (once per run) and checks its kind and the models it covers; reading
    happens on the first call, so a method's errors about the file surface when it runs.
    """

    source: str  # the file, for messages

    def tensors(self) -> list[torch.Tensor | None]:
        """Per input model (in input order): its statistic of this tensor, fp32 on the compute device and
        of the declared shape, or None where the file holds none (or the declared shape is None)."""

    def metadata(self, key: str, default: Any = None) -> Any:
        """A JSON metadata entry the method declared (``StatisticsFile.metadata``), parsed; ``default`` when absent."""


@dataclass
class TensorContext:
    """Where a method call stands: the tensor's name and layer, the device, the seed, whole-model stats
    (``stats``) and, for methods declaring a ``StatisticsFile``, the tensor's gathered ``statistics``.
    ``memo`` is a per-tensor store that a resident session keeps between calls (None when merging once):
    a method may keep there work that depends only on the inputs, such as sorted magnitudes."""

    name: str
    layer: int | None
    num_layers: int
    device: torch.device
    seed: int = 0
    stats: Any = None
    statistics: TensorStatistics | None = None
    memo: dict[str, Any] | None = None

    def generator(self) -> torch.Generator:
        """A CPU generator seeded from (seed, tensor name): the same draws on every device and run."""
        digest = hashlib.blake2b(f"{self.seed}:{self.name}".encode(), digest_size=8).digest()
        return torch.Generator(device="cpu").manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))

    def rand_like(self, t: torch.Tensor) -> torch.Tensor:
        """Uniform [0, 1) draws shaped like ``t``, made on the CPU (device-independent), moved to ``t``'s device."""
        return torch.rand(t.shape, generator=self.generator(), dtype=torch.float32).to(t.device)


class MergeInputs:
    """The tensors a method merges for one name: ``base`` (θ0 or None), ``models`` (θt), ``deltas`` (τt).

    Inputs arrive either as models or as task vectors; the other form is derived on first use
    (τt = θt − θ0, θt = θ0 + τt), so a method asks for the form its math is written in.
    ``keys`` are the input node ids, in the order of the lists.
    """

    def __init__(self, base: torch.Tensor | None, keys: Sequence[str], *,
                 models: Sequence[torch.Tensor] | None = None, deltas: Sequence[torch.Tensor] | None = None):
        if (models is None) == (deltas is None):
            raise ValueError("give exactly one of models= or deltas=")
        if deltas is not None and base is None:
            raise ValueError("task vectors need a base")
        self.base = base
        self.keys = list(keys)
        self._models = list(models) if models is not None else None
        self._deltas = list(deltas) if deltas is not None else None

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def models(self) -> list[torch.Tensor]:
        if self._models is None:
            self._models = [self.base + d for d in self._deltas]
        return self._models

    @property
    def deltas(self) -> list[torch.Tensor]:
        if self._deltas is None:
            if self.base is None:
                raise ValueError("this method needs a base model to form task vectors")
            self._deltas = [m - self.base for m in self._models]
        return self._deltas

    def fresh_deltas(self, index: slice | torch.Tensor | None = None) -> list[torch.Tensor]:
        """Task vectors in new tensors the caller may overwrite (neither cached nor shared).

        With ``index`` (a slice or an index tensor over the flattened tensor) only those entries are
        formed, as flat tensors of at least fp32 (an fp16/bf16 input is converted chunk by chunk):
        methods that stream through a large tensor in cache-sized chunks use this. Costs one allocation
        per model either way (θt − θ0, or a copy of τt), where ``deltas`` followed by an out-of-place
        operation would cost two.
        """
        if self._deltas is None and self.base is None:
            raise ValueError("this method needs a base model to form task vectors")
        if index is None:
            if self._deltas is not None:
                return [d.clone() for d in self._deltas]
            return [m - self.base for m in self._models]
        if self._deltas is not None:
            return [_wide(d.reshape(-1)[index], copy=True) for d in self._deltas]
        base = _wide(self.base.reshape(-1)[index], copy=False)
        return [_wide(m.reshape(-1)[index], copy=False) - base for m in self._models]


def _wide(t: torch.Tensor, *, copy: bool) -> torch.Tensor:
    """``t`` in at least fp32 (a copy when ``copy`` or when converted)."""
    return t.to(torch.promote_types(t.dtype, torch.float32), copy=copy)


class ModelStatistic(Protocol):
    """Whole-model statistics gathered in ``passes`` streaming passes before the merge pass."""

    passes: int

    def observe(self, pass_index: int, inputs: MergeInputs, params: dict[str, Any], ctx: TensorContext) -> None:
        """See one tensor's inputs during pass ``pass_index``."""

    def finish_pass(self, pass_index: int) -> None:
        """Called after every tensor has been observed in pass ``pass_index``."""

    def result(self) -> Any:
        """What the method receives as ``ctx.stats``."""


# How method lists group the families (in this order); a method that needs data goes to "Needs data".
GROUPS: tuple[tuple[str, frozenset[str]], ...] = (
    ("Linear family", frozenset({"linear", "model_stock", "metagpt", "lines"})),
    ("Sparsify & elect", frozenset({"ties", "dare", "breadcrumbs", "della", "pcb", "tall", "lwptv", "selective",
                                    "emr"})),
    ("Subspace / SVD", frozenset({"iso"})),
    ("Spherical", frozenset({"slerp"})),
    ("Needs data", frozenset()),
    ("Other", frozenset()),
)

MergeFn = Callable[[MergeInputs, dict[str, Any], TensorContext], torch.Tensor]
StatisticFactory = Callable[[dict[str, Any]], "ModelStatistic | None"]
LinearFn = Callable[[dict[str, Any], int], tuple[list[float], float]]
ContextLinearFn = Callable[[dict[str, Any], int, TensorContext, MergeInputs], tuple[list[float], float]]


@dataclass(frozen=True)
class StagedForm:
    """How a method with the shared λ contract (``θ = θ0 + λ·τm``, the ``lambda`` parameter of
    ``engine.methods.params``) builds τm in stages whose middle can be kept between parameter changes.

    Stage 1 selects, per model, which entries of its task vector τt take part: a boolean *mask* shaped
    like the tensor. Stage 2 forms τm (at λ = 1) from the task vectors and their masks. A mask must depend
    on τt and on nothing but what ``mask_key`` returns, so a cached mask is reused while its key holds:

    - ``mask_key(params, t, ctx)``: a hashable, comparable value of everything model t's mask depends on
      besides τt (resolved parameters, whole-model statistics in ``ctx.stats``);
    - ``masks(inputs, params, ctx, outs, stale)``: write the mask of every model t with ``stale[t]`` into
      the bool tensor ``outs[t]`` (shaped like the tensor), leaving the others untouched;
    - ``combine(deltas, masks, params)``: τm as a fresh tensor, from the task vectors and all masks.

    ``θ0 + λ·combine(τ, masks(τ), params)`` must equal ``merge`` for the same parameters.
    """

    mask_key: Callable[[dict[str, Any], int, TensorContext], Hashable]
    masks: Callable[[MergeInputs, dict[str, Any], TensorContext, Sequence[torch.Tensor], Sequence[bool]], None]
    combine: Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor], dict[str, Any]], torch.Tensor]


@dataclass(frozen=True)
class TaskParts:
    """A method whose merged model comes with one model per input task, rebuilt from small per-task parts
    (EMR-Merging's masks and rescalers): evaluation scores each task with its own model, and a Save node
    writes the parts beside the merged weights, in the file ``file`` of the output folder.

    - ``model(inputs, params, ctx, t)``: input t's own tensor (``ctx.stats`` as for ``merge``);
    - ``plan(shape, dtype, n)``: the parts saved for one merged float tensor of that shape and output dtype,
      with ``n`` inputs, as ``(suffix, shape, dtype)``; a part is saved as ``<tensor name><suffix>``;
    - ``tensors(inputs, params, ctx)``: those parts for one tensor, ``{suffix: tensor}``;
    - ``metadata(params, stats, tasks)``: the parts file's header entries (strings), given the resolved
      parameters, the whole-model statistics and, per input, ``{"name": node id, "expert": file or None}``.
    """

    file: str
    model: Callable[[MergeInputs, dict[str, Any], TensorContext, int], torch.Tensor]
    plan: Callable[[tuple[int, ...], torch.dtype, int], list[tuple[str, tuple[int, ...], torch.dtype]]]
    tensors: Callable[[MergeInputs, dict[str, Any], TensorContext], dict[str, torch.Tensor]]
    metadata: Callable[[dict[str, Any], Any, list[dict[str, Any]]], dict[str, str]]


@dataclass(frozen=True)
class StatisticsFile:
    """A method merges with per-model statistics gathered on data beforehand, from a file.

    ``kind``: what the file must hold (``weightsmith learn KIND`` writes it); ``param``: the ``path``
    parameter naming the file; ``shape(tensor_shape)``: the shape of a model's statistic for a tensor of
    that shape, or None when no statistic is expected for it (never read); ``metadata``: the JSON
    metadata entries the method reads. The executor opens the file once per run, checks it and hands
    each tensor's statistics to the method as ``ctx.statistics`` (a ``TensorStatistics``).
    """

    kind: str
    shape: Callable[[tuple[int, ...]], tuple[int, ...] | None]
    param: str = "statistics"
    metadata: tuple[str, ...] = ()


@dataclass(frozen=True)
class MethodSpec:
    """A registered merge method.

    ``merge`` computes one tensor. ``needs_base``: the method cannot run without θ0.
    ``statistic(params)`` returns a ModelStatistic when the parameters ask for a whole-model pass
    (e.g. ``scope='model'``), else None. ``statistics_file``: the method merges with statistics gathered
    on data (see ``StatisticsFile``). ``task_parts``: the output also holds one model per input task
    (see ``TaskParts``). ``migrate(params)``: how a node's parameters, read from a recipe written before
    one of them moved, are written now (applied when a recipe is read; it may name another method).
    ``chunked_inputs``: the method reads its model inputs only in chunks (``fresh_deltas(index)``, which
    converts each chunk to at least fp32), so the streaming executor hands over the tensors as stored
    (fp16/bf16 stay so) instead of one fp32 copy per input; its output must still be fp32 or wider.

    Incremental forms, which live tuning executes without knowing the method:

    - ``linear(params, n)`` — only for methods whose output is a linear combination ``Σ a_t θt + b θ0``
      of the inputs with coefficients fixed by the parameters — returns ``([a_t], b)`` for one tensor with
      its per-model/per-layer values already resolved; the executor also accumulates such merges in place;
    - ``contextual_linear(params, n, ctx, inputs)`` — the same for methods whose coefficients also depend
      on the tensor's place (``ctx.layer``, ``ctx.num_layers``), on whole-model statistics (``ctx.stats``)
      or on the inputs themselves (e.g. their norms), never on anything else; at most one of the two;
    - ``staged``: a ``StagedForm`` (needs the shared ``lambda`` parameter);
    - ``scale``: the name of the parameter ``s`` when the output is ``θ0 + s·τm`` with τm independent of
      ``s`` (TSV-M's and the Iso methods' ``alpha``); live tuning then caches τm and moves ``s`` with one
      multiply-add. The shared ``lambda`` parameter (``engine.methods.params.LAMBDA``) carries this
      contract without being named here.
    """

    name: str
    label: str
    family: str
    summary: str
    params: tuple[Param, ...]
    merge: MergeFn
    requirements: frozenset[Requirement] = frozenset({Requirement.DATA_FREE})
    needs_base: bool = True
    min_models: int = 1
    max_models: int | None = None
    reference: str = ""
    random: bool = False
    statistic: StatisticFactory | None = None
    linear: LinearFn | None = None
    contextual_linear: ContextLinearFn | None = None
    staged: StagedForm | None = None
    statistics_file: StatisticsFile | None = None
    task_parts: TaskParts | None = None
    migrate: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    chunked_inputs: bool = False
    scale: str | None = None
    aliases: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.linear is not None and self.contextual_linear is not None:
            raise ValueError(f"method '{self.name}' declares both linear and contextual_linear; keep one")
        if self.staged is not None and not any(p.name == "lambda" for p in self.params):
            raise ValueError(f"method '{self.name}' declares a staged form without the shared 'lambda' parameter")
        if self.scale is not None and not any(p.name == self.scale and p.type == "float" for p in self.params):
            raise ValueError(f"method '{self.name}' declares '{self.scale}' as its scale, which is not one of its "
                             "float parameters")
        if self.statistics_file is not None and not any(
                p.name == self.statistics_file.param and p.type == "path" for p in self.params):
            raise ValueError(f"method '{self.name}' reads statistics from '{self.statistics_file.param}', "
                             "which is not one of its path parameters")

    def linear_form(self) -> ContextLinearFn | None:
        """The method's linear form in context, ``(params, n, ctx, inputs) -> ([a_t], b)`` with output
        ``Σ a_t θt + b θ0`` (``linear`` or ``contextual_linear``); None when the output is not linear."""
        if self.linear is not None:
            linear = self.linear
            return lambda params, n, ctx, inputs: linear(params, n)
        return self.contextual_linear

    @property
    def group(self) -> str:
        """The method's place in ``GROUPS``: its family's group, or "Needs data" when it needs data."""
        if Requirement.DATA_FREE not in self.requirements:
            return "Needs data"
        return next((g for g, families in GROUPS if self.family in families), "Other")

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "label": self.label, "family": self.family, "summary": self.summary,
            "requirements": sorted(r.value for r in self.requirements), "needs_base": self.needs_base,
            "min_models": self.min_models, "max_models": self.max_models, "reference": self.reference,
            "random": self.random, "aliases": list(self.aliases),
            "params": [p.to_json() for p in self.params],
        }
