"""The recipe graph: nodes, edges, versioned JSON, validation and the per-tensor streaming executor."""

from engine.graph.nodes import NodeType, Port, get_node_type, node_types, register_node_type
from engine.graph.recipe import Edge, Node, Recipe
from engine.graph.validate import Problem, require_valid, topological_order, validate
from engine.graph.executor import GraphRun, RunResult, materialize, run_recipe

__all__ = [
    "Edge", "Node", "Recipe", "NodeType", "Port", "get_node_type", "node_types", "register_node_type",
    "Problem", "require_valid", "topological_order", "validate", "GraphRun", "RunResult", "materialize", "run_recipe",
]
