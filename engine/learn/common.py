"""What every learner shares: the result type, the merge node's task vectors as learnable mixes, which
task belongs to which model, and the learned recipe (with paths that still resolve where it is saved).

The merge node's inputs are loaded by ``engine.graph.resident_inputs`` (``load_inputs``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from engine.errors import EngineInputError
from engine.evaluation.tasks import Task
from engine.graph import Recipe, nodes_of
from engine.graph.node_kinds import MERGE
from engine.graph.resident_inputs import load_inputs
from engine.learn.coefficients import Groups, TaskVectorMix, make_groups
from engine.runtime import CancelToken
from engine.runtime.progress import ProgressCallback


@dataclass
class LearnResult:
    """What a learner returns.

    ``recipe``: a copy of the input recipe whose merge node holds the learned merge (coefficients or a
    statistics file), reproducible without data. ``coefficients``: per input model, per coefficient
    group (``all`` for task-wise, a layer prefix or a tensor name otherwise) the learned value — the
    rows and columns of the GUI's heatmap; empty for Fisher/RegMean. ``history``: one entry per
    optimisation step (``step``, ``loss`` and the objective's own keys, e.g. ``entropy``).
    ``statistics``: the statistics file written (Fisher/RegMean). ``info``: method-specific figures.
    """

    recipe: Recipe
    coefficients: dict[str, dict[str, float]] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    statistics: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)


def merge_node(recipe: Recipe, node_id: str | None) -> str:
    """``node_id`` checked to be a merge node, or the recipe's only merge node when None."""
    if node_id is None:
        merges = nodes_of(recipe, MERGE)
        if len(merges) != 1:
            raise EngineInputError(f"the recipe has {len(merges)} merge nodes; name the one to learn "
                                   f"({', '.join(merges) or 'none'})")
        return merges[0]
    if recipe.node(node_id).kind is not MERGE:
        raise EngineInputError(f"node '{node_id}' is not a merge node")
    return node_id


def load_mix(recipe: Recipe, node_id: str, granularity: str, *, device: torch.device,
             progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> tuple[TaskVectorMix, Groups]:
    """The merge node's task vectors, resident on ``device`` (``engine.graph.resident_inputs``), with one
    learnable coefficient group per ``granularity`` (task, layer or tensor): what the coefficient learners
    optimise over."""
    if not recipe.inputs(node_id, "base"):
        raise EngineInputError("this method needs a base model on the merge node's 'base' port")
    inputs = load_inputs(recipe, node_id, device=device, progress=progress, cancel=cancel)
    groups = make_groups(inputs.float_names, granularity)
    return TaskVectorMix(inputs, groups), groups


def match_tasks(recipe: Recipe, keys: Sequence[str], tasks: Sequence[Task],
                task_map: Mapping[str, str] | None = None) -> dict[str, Task]:
    """The task each input model was fine-tuned for: ``task_map`` (node id → task name) first, then a
    task named like the node, then the task whose expert file is the node's checkpoint."""
    by_name = {t.name: t for t in tasks}
    by_expert = {Path(t.expert).resolve(): t for t in tasks if getattr(t, "expert", None)}
    out: dict[str, Task] = {}
    for key in keys:
        wanted = (task_map or {}).get(key)
        if wanted is not None:
            if wanted not in by_name:
                raise EngineInputError(f"task '{wanted}' (given for model '{key}') is not among the tasks "
                                       f"({', '.join(by_name)})")
            out[key] = by_name[wanted]
            continue
        node = recipe.nodes[key]
        path = recipe.resolve_path(node.params[node.kind.file_param]).resolve() if node.kind.source else None
        task = by_name.get(key) or by_expert.get(path)
        if task is None:
            raise EngineInputError(f"no task for model '{key}': name its task (task_map / --task {key}=TASK); "
                                   f"the tasks are {', '.join(by_name)}")
        out[key] = task
    return out


def learned_recipe(recipe: Recipe, node_id: str, params: dict[str, Any]) -> Recipe:
    """A copy of ``recipe`` whose merge node ``node_id`` has ``params`` (its position and edges kept)."""
    out = recipe.copy()
    out.set_params(node_id, params)
    return out


def save_recipe(recipe: Recipe, path: str | Path) -> Path:
    """Write ``recipe`` to ``path`` (relative file paths rewritten to name the same files from there)."""
    path = Path(path).resolve()
    recipe.save(path)
    return path


def sample_rows(n: int, k: int | None, generator: torch.Generator) -> torch.Tensor:
    """Indices of ``k`` distinct rows out of ``n`` drawn with ``generator`` (all rows, shuffled, when
    ``k`` is None or at least ``n``)."""
    order = torch.randperm(n, generator=generator)
    return order if k is None or k >= n else order[:k]
