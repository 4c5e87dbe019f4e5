"""Merge methods: pure per-tensor functions with declared parameters, registered by name.

Importing this package registers every method family.
"""

from engine.methods.base import MergeInputs, MethodSpec, ModelStatistic, Param, Requirement, TensorContext
from engine.methods.registry import all_methods, get_method, register
from engine.methods import (  # noqa: F401  (importing a family module registers its methods)
    linear, slerp, ties, dare, breadcrumbs, della, model_stock, tall, pcb, metagpt, lines, iso, lwptv,
    sce, spherical_means, selective, task_singular_vectors, wudi, quantized,
    lore, stf,
)
from engine.methods import emr, doge  # noqa: F401  (EMR-Merging with per-task parts; DOGE)
from engine.methods import data_merge  # noqa: F401  (Fisher merging and RegMean from gathered statistics)

__all__ = [
    "MergeInputs", "MethodSpec", "ModelStatistic", "Param", "Requirement", "TensorContext",
    "all_methods", "get_method", "register",
]
