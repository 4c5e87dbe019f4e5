"""Generation preview: greedy completions of a few prompts by a merge, its base and each of its inputs.

While a causal language model's merge is tuned, reading what it *writes* says more than a perplexity.
``GenerationPreview`` is built once from the merge's model folder (its ``config.json`` and tokenizer;
``causal_lm_folder`` finds it and refuses models that are not causal LMs; ``session_preview`` shares
the module of a live session's evaluation). ``complete(state_dict,
prompts, settings)`` decodes greedily — the most likely token each step, so the same weights always
write the same text — through the ``generation`` task kind's machinery
(``engine.evaluation.lm_tasks.GenerationTask``): prompts encoded the same way (through the chat
template when asked), cut from the left to the context minus ``max_new_tokens``, padded on the left in
one batch and run through the task's functional forward on the given tensors (one module for every
call, never rebuilt); a completion ends at the end-of-text token or at the first stop string (cut
off). A ``CancelToken`` is polled between tokens.

Completions are cached per prompt by the weights' identity (``model_key``), the prompt and the
settings, so the base and the experts are generated once and coming back to an earlier slider value is
free. ``preview_session(session, preview, prompts, settings, report)`` fills the columns of a live
session (``engine.live.LiveSession``): the merge's current weights first, then the base, then each
input model, each column handed to ``report`` as it is ready. It must run on the thread that drives the
session (a ``LoopJob`` of ``engine.live.LiveLoop``): the merged weights are views into buffers that
the next update overwrites.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from engine.errors import EngineInputError
from engine.evaluation.hf import Network
from engine.evaluation.lm_tasks import CausalLMTask, GenerationAccumulator, GenerationItem, GenerationTask
from engine.evaluation.runner import checkpoint_key
from engine.graph import GraphRun, Recipe
from engine.graph.node_kinds import source_paths
from engine.graph.resident_inputs import upstream_recipe
from engine.jsonfiles import read_json
from engine.live.session import RESIDENT, LiveSession
from engine.runtime import CancelToken

NEEDS_LM = "generation preview needs a causal language model"
CACHE_SIZE = 4096  # completions kept (prompt × model × settings)
MERGE, BASE, MODEL = "merge", "base", "model"


@dataclass(frozen=True)
class GenerationSettings:
    """How completions are decoded: at most ``max_new_tokens`` tokens, cut at the first of ``stop``;
    ``chat_template`` wraps each prompt as a user message with the tokenizer's chat template."""

    max_new_tokens: int = 32
    stop: tuple[str, ...] = ("\n",)
    chat_template: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or isinstance(self.max_new_tokens, bool) or self.max_new_tokens < 1:
            raise EngineInputError(f"max_new_tokens must be a positive whole number, not {self.max_new_tokens!r}")
        if not all(isinstance(s, str) for s in self.stop):
            raise EngineInputError("each stop string must be text")
        object.__setattr__(self, "stop", tuple(s for s in self.stop if s))

    def to_json(self) -> dict[str, Any]:
        """The settings as JSON (the project file keeps them)."""
        return {"max_new_tokens": self.max_new_tokens, "stop": list(self.stop), "chat_template": self.chat_template}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "GenerationSettings":
        """Settings from ``to_json``'s form; missing keys take their defaults, bad values raise
        EngineInputError."""
        default = cls()
        stop = data.get("stop", list(default.stop))
        if not isinstance(stop, list):
            raise EngineInputError("'stop' must be a list of texts")
        return cls(data.get("max_new_tokens", default.max_new_tokens), tuple(stop),
                   bool(data.get("chat_template", default.chat_template)))


@dataclass(frozen=True)
class Completion:
    """One prompt's greedy continuation; ``stopped`` is False when it reached ``max_new_tokens`` without
    an end-of-text token or a stop string."""

    prompt: str
    text: str
    stopped: bool

    def to_json(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "text": self.text, "stopped": self.stopped}


@dataclass(frozen=True)
class PreviewColumn:
    """The completions of one model of a live session: ``role`` is ``merge``, ``base`` or ``model`` (an
    input of the merge); ``params`` are the merge's parameter values its weights had."""

    role: str
    node_id: str
    completions: tuple[Completion, ...]
    params: dict[str, Any] | None = field(default=None, compare=False)


def _blake(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def causal_lm_folder(recipe: Recipe, node_id: str) -> Path:
    """The model folder whose ``config.json`` and tokenizer serve the preview of merge ``node_id``: its
    base's checkpoint folder, else the first model folder among its inputs. EngineInputError starting
    with "generation preview needs a causal language model" when that folder's ``config.json`` names no
    ``…ForCausalLM`` class, or when no input is a Hugging Face model folder."""
    paths = source_paths(recipe)
    order: list[str] = []
    for port in ("base", "models"):
        for nid in recipe.inputs(node_id, port):
            order += [n for n in (nid, *recipe.upstream(nid)) if n in paths and n not in order]
    for nid in order:
        folder = recipe.resolve_path(paths[nid])
        config = folder / "config.json"
        if not config.is_file():
            continue
        data = read_json(config, "the model's config.json")
        architectures = data.get("architectures") if isinstance(data, dict) else None
        names = [a for a in architectures if isinstance(a, str)] if isinstance(architectures, list) else []
        if not any(a.endswith(CausalLMTask.heads) for a in names):
            what = f"a {', '.join(names)}" if names else "a model whose config.json names no architecture"
            raise EngineInputError(f"{NEEDS_LM} (…ForCausalLM); '{folder.name}' is {what}")
        return folder
    where = f" such as '{Path(paths[order[0]]).name}'" if order else ""
    raise EngineInputError(f"{NEEDS_LM}: the inputs of '{node_id}'{where} are not Hugging Face model folders "
                           "(a config.json naming a …ForCausalLM class, and a tokenizer)")


def node_identity(recipe: Recipe, node_id: str) -> str:
    """What a node's weights are made of: a checkpoint's file identity, or for any other node its
    upstream part of the recipe with every checkpoint replaced by its file identity."""
    paths = source_paths(recipe)
    if node_id in paths:
        return checkpoint_key(recipe.resolve_path(paths[node_id]))
    sub = upstream_recipe(recipe, node_id)
    nodes = [[nid, n.type, {k: (checkpoint_key(recipe.resolve_path(v)) if nid in paths and k == n.kind.file_param
                                else v) for k, v in n.params.items()}] for nid, n in sub.nodes.items()]
    edges = sorted([e.src, e.dst, e.port] for e in sub.edges)
    return "node:" + _blake(json.dumps([nodes, edges], sort_keys=True, default=str))


class CompletionCache:
    """Completions by (model key, prompt, settings), the oldest forgotten beyond ``size``; thread-safe.
    One cache may serve several previews (a new live session keeps what the last one generated)."""

    def __init__(self, size: int = CACHE_SIZE):
        self.size = size
        self._items: OrderedDict[tuple[str, str, GenerationSettings], Completion] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model_key: str, prompts: Sequence[str], settings: GenerationSettings) -> dict[str, Completion]:
        """The cached completions among ``prompts``, by prompt."""
        with self._lock:
            found = {p: self._items.get((model_key, p, settings)) for p in prompts}
        return {p: c for p, c in found.items() if c is not None}

    def put(self, model_key: str, completions: Sequence[Completion], settings: GenerationSettings) -> None:
        """Remember ``completions`` (each under its prompt)."""
        with self._lock:
            for c in completions:
                self._items[(model_key, c.prompt, settings)] = c
                self._items.move_to_end((model_key, c.prompt, settings))
            while len(self._items) > self.size:
                self._items.popitem(last=False)


class _PreviewTask(GenerationTask):
    """The generation task kind without a data file: prompts come from the caller, and the cancel
    token of the call in progress is polled between tokens."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.cancel: CancelToken | None = None

    def stopped(self, tokens: list[int]) -> bool:
        if self.cancel is not None:
            self.cancel.raise_if_cancelled()
        return super().stopped(tokens)


class GenerationPreview:
    """Greedy, cached completions of prompts for state dicts of one causal-LM architecture.

    ``folder``: a Hugging Face model folder (config.json naming a ``…ForCausalLM`` class and, unless
    ``tokenizer`` is given, the tokenizer); ``device``: where the forward runs (the state dicts' device);
    ``network``: the ``engine.evaluation.hf.Network`` of a causal-LM task of the same folder, to share its
    module instead of building another. Not re-entrant: one thread generates at a time, and not while
    another task uses a shared network. ``cache``: where completions are kept (a new one by default).
    """

    def __init__(self, folder: str | Path, *, tokenizer: str | Path | Any = None,
                 device: str | torch.device = "cpu", network: Network | None = None,
                 cache: CompletionCache | None = None):
        self.folder = Path(folder)
        self.device = torch.device(device)
        self.cache = cache if cache is not None else CompletionCache()
        self._tasks: dict[GenerationSettings, _PreviewTask] = {}
        self.network = network
        self.tokenizer = tokenizer  # a folder or object until the first task has loaded it
        first = self._task(GenerationSettings())
        self.tokenizer, self.network = first.tokenizer, first.network

    def _task(self, settings: GenerationSettings) -> _PreviewTask:
        task = self._tasks.get(settings)
        if task is None:
            task = _PreviewTask(self.folder, {}, self.tokenizer,
                                name="generation preview", max_new_tokens=settings.max_new_tokens, stop=settings.stop,
                                chat_template=settings.chat_template, keep_outputs=1 << 30)
            if self.network is not None:  # one module for every settings' task (built lazily: nothing is lost)
                task.network = self.network
            self._tasks[settings] = task
        return task

    def cached(self, model_key: str, prompts: Sequence[str],
               settings: GenerationSettings) -> list[Completion] | None:
        """The cached completions of every prompt for ``model_key``, or None when one is missing."""
        found = self.cache.get(model_key, prompts, settings)
        return [found[p] for p in prompts] if len(found) == len(set(prompts)) else None

    def complete(self, state_dict: Mapping[str, torch.Tensor], prompts: Sequence[str],
                 settings: GenerationSettings = GenerationSettings(), *, model_key: str | None = None,
                 cancel: CancelToken | None = None) -> list[Completion]:
        """Each prompt's greedy completion by the model with ``state_dict``'s weights (checkpoint names;
        on the preview's device). With ``model_key`` (an identity of those weights) completions are
        cached and only prompts not yet completed are generated. Cancelled between tokens."""
        prompts = list(prompts)
        have = self.cache.get(model_key, prompts, settings) if model_key is not None else {}
        todo = list(dict.fromkeys(p for p in prompts if p not in have))
        if todo:
            task = self._task(settings)
            task.cancel = cancel
            batch = task.max_batch_size(self.device)
            try:
                for start in range(0, len(todo), batch):
                    chunk = todo[start:start + batch]
                    have.update(zip(chunk, self._generate(task, state_dict, chunk)))
            finally:
                task.cancel = None
            if model_key is not None:
                self.cache.put(model_key, [have[p] for p in todo], settings)
        return [have[p] for p in prompts]

    def _generate(self, task: _PreviewTask, state_dict: Mapping[str, torch.Tensor],
                  prompts: list[str]) -> list[Completion]:
        room = task.limit() - task.max_new_tokens
        rows = [(task.encode_prompt(p) or task.start_token("a prompt", self.folder))[-room:] for p in prompts]
        length = max(len(ids) for ids in rows)
        inputs = torch.zeros((len(rows), 2, length), dtype=torch.long)
        inputs[:, 0] = task.pad_id
        for i, ids in enumerate(rows):
            inputs[i, 0, length - len(ids):] = torch.tensor(ids, dtype=torch.long)
            inputs[i, 1, length - len(ids):] = 1
        task.items = [GenerationItem(self.folder, i, ("",)) for i in range(len(prompts))]
        decoder = GenerationAccumulator(task)
        with torch.no_grad():
            generated = task.forward(state_dict, inputs.to(self.device))
        decoder.add(generated.cpu(), torch.arange(len(prompts)))
        unstopped = {item.line for item in decoder.unstopped}
        return [Completion(p, out["output"], i not in unstopped)
                for i, (p, out) in enumerate(zip(prompts, decoder.outputs))]


def session_preview(session: LiveSession, folder: str | Path,
                    cache: CompletionCache | None = None) -> GenerationPreview:
    """A preview on ``session``'s device, keeping completions in ``cache``, that shares the module of the
    session's evaluation when one of its tasks is a causal LM of the same folder (one module in memory,
    not two)."""
    tasks = session.evaluator.tasks if session.evaluator is not None else ()
    network = next((t.network for t in tasks if isinstance(t, CausalLMTask) and t.folder is not None
                    and t.folder.resolve() == Path(folder).resolve()), None)
    return GenerationPreview(folder, device=session.device, network=network, cache=cache)


def preview_session(session: LiveSession, preview: GenerationPreview, prompts: Sequence[str],
                    settings: GenerationSettings, report: Callable[[PreviewColumn], None], *,
                    cancel: CancelToken | None = None) -> None:
    """Complete ``prompts`` with the session's merge (its current weights, when it has any), then its base,
    then each input model, handing each column to ``report`` when it is ready (cached ones at once).
    Run it on the thread that drives ``session``."""
    recipe, node_id = session.recipe, session.node_id
    bases = recipe.inputs(node_id, "base")
    identities = {nid: node_identity(recipe, nid) for nid in (*bases, *session.keys)}
    if session.params is not None:
        params = json.loads(json.dumps(session.params, default=str))
        key = "merge:" + _blake(json.dumps([[identities[n] for n in (*bases, *session.keys)], params],
                                           sort_keys=True))
        report(PreviewColumn(MERGE, node_id, tuple(preview.complete(session.state_dict(), prompts, settings,
                                                                     model_key=key, cancel=cancel)), params))
    if bases:
        key = identities[bases[0]]
        done = preview.cached(key, prompts, settings)
        if done is None:
            done = preview.complete(session.base_state_dict(), prompts, settings, model_key=key, cancel=cancel)
        report(PreviewColumn(BASE, bases[0], tuple(done)))
    for t, nid in enumerate(session.keys):
        key = identities[nid]
        done = preview.cached(key, prompts, settings)
        if done is None:
            done = preview.complete(_input_state(session, t, cancel), prompts, settings, model_key=key, cancel=cancel)
        report(PreviewColumn(MODEL, nid, tuple(done)))


def _input_state(session: LiveSession, t: int, cancel: CancelToken | None) -> dict[str, torch.Tensor]:
    """Input ``t``'s full weights: from the resident buffers, or streamed from its files."""
    if session.mode == RESIDENT:
        return session.resident.model_state(t)
    with GraphRun(session.recipe, device=session.device, cancel=cancel) as run:
        return run.materialize(session.keys[t])
