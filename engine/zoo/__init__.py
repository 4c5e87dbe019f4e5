"""The demo model zoo: a small pre-trained backbone and one expert per task, built locally from a seed.

``build_zoo(directory, size=..., seed=...)`` writes safetensors checkpoints, per-task heads and data,
the suite manifest ``zoo.json`` and the ready recipe ``demo.json``; see ``engine.zoo.build``.
Importing this package registers the zoo as a task source (the ``zoo-mlp`` task kind,
``engine.zoo.task_source``), so suite manifests can declare its tasks.
"""

from engine.zoo import task_source
from engine.zoo.build import SIZES, ZooSize, build_zoo, default_zoo_dir

task_source.register()

__all__ = ["SIZES", "ZooSize", "build_zoo", "default_zoo_dir"]
