"""The evaluation engine: the Task protocol, task suites on disk, the batched runner, metrics, the one
evaluation service Evaluate nodes score through, and sweeps."""

from engine.evaluation.metrics import Accumulator, Scores, average, normalized_accuracy
from engine.evaluation.runner import EvalCache, Evaluator, checkpoint_key, evaluate, state_dict_fingerprint
from engine.evaluation.suite import load_suite, read_manifest
from engine.evaluation.tasks import ClassifierTask, Split, Task
from engine.evaluation.service import EvaluationService, evaluate_recipe
from engine.evaluation.sweep import sweep, sweep_csv, write_results

__all__ = [
    "Accumulator", "Scores", "average", "normalized_accuracy",
    "EvalCache", "Evaluator", "checkpoint_key", "evaluate", "state_dict_fingerprint",
    "load_suite", "read_manifest", "ClassifierTask", "Split", "Task",
    "EvaluationService", "evaluate_recipe", "sweep", "sweep_csv", "write_results",
]
