"""MaTS, data part: RegMean's per-layer input Gram matrices, saved for the ``mats`` merge.

MaTS (``engine.methods.data_merge.mats_merge``) solves RegMean's system by conjugate gradient, so it
reads the same statistics: each model's Gram matrix ``XᵀX / n`` of every linear layer's inputs on its
own task. This learner gathers them exactly as ``learn_regmean`` does (the same file kind: a file from
either learner serves both methods) and writes a recipe whose merge node is ``mats`` over that file,
with its start (``init``, ``lambda``), ``alpha`` and ``iterations``; all four can be changed later
without gathering the statistics again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from engine.errors import EngineInputError
from engine.evaluation.tasks import Task
from engine.graph import Recipe
from engine.learn.common import LearnResult, learned_recipe, merge_node
from engine.learn.regmean import learn_regmean
from engine.methods.data_merge import MATS_STARTS
from engine.runtime import CancelToken
from engine.runtime.progress import ProgressCallback


def learn_mats(recipe: Recipe, node_id: str | None, tasks: Sequence[Task], statistics: str | Path, *,
               split: str = "train", examples: int = 256, init: str = "task_arithmetic", lam: float = 0.3,
               alpha: float = 1.0, iterations: int = 100, task_map: Mapping[str, str] | None = None,
               batch_size: int = 256, seed: int = 0, device: str = "auto",
               progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> LearnResult:
    """Gather each input model's per-layer input Gram matrices on its task (``learn_regmean``), write
    them to ``statistics`` and return the recipe whose merge node ``node_id`` is ``mats`` over that file.

    ``init`` (task_arithmetic, average or base) and ``lam`` (task arithmetic's λ) set where the
    conjugate gradient starts; a task-arithmetic start needs a base on the merge node.
    """
    if init not in MATS_STARTS:
        raise EngineInputError(f"unknown MaTS start '{init}' ({', '.join(MATS_STARTS)})")
    if iterations < 1:
        raise EngineInputError("MaTS needs at least 1 conjugate-gradient iteration")
    node_id = merge_node(recipe, node_id)
    if init != "average" and not recipe.inputs(node_id, "base"):
        raise EngineInputError(f"MaTS starting from '{init}' needs a base model on node '{node_id}' "
                               "(or start from 'average')")
    gathered = learn_regmean(recipe, node_id, tasks, statistics, split=split, examples=examples, alpha=alpha,
                             task_map=task_map, batch_size=batch_size, seed=seed, device=device,
                             progress=progress, cancel=cancel)
    params = {"method": "mats", "statistics": str(gathered.statistics), "init": init, "lambda": lam,
              "alpha": alpha, "iterations": iterations}
    return LearnResult(learned_recipe(recipe, node_id, params), statistics=gathered.statistics, info=gathered.info)
