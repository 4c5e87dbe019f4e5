"""The recipe graph: nodes and their kinds, edges, versioned JSON, validation and the per-tensor streaming executor."""

from engine.graph.node_kinds import NodeKind, Port, all_node_kinds, node_kind, nodes_of
from engine.graph.recipe import Edge, Node, Recipe
from engine.graph.validate import Problem, require_valid, topological_order, validate
from engine.graph.executor import GraphRun, RunOptions, RunResult, materialize, run_recipe

__all__ = [
    "Edge", "Node", "Recipe", "NodeKind", "Port", "all_node_kinds", "node_kind", "nodes_of",
    "Problem", "require_valid", "topological_order", "validate", "GraphRun", "RunOptions", "RunResult", "materialize",
    "run_recipe",
]
