"""Merge methods: pure per-tensor functions with declared parameters, registered by name.

Importing this package registers every method family.
"""

from engine.methods.base import MergeInputs, MethodSpec, ModelStatistic, Param, Requirement, TensorContext
from engine.methods.registry import all_methods, get_method, register
from engine.methods import linear  # noqa: F401  (registers the linear family)

__all__ = [
    "MergeInputs", "MethodSpec", "ModelStatistic", "Param", "Requirement", "TensorContext",
    "all_methods", "get_method", "register",
]
