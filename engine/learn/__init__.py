"""Data-dependent merges (METHODS.md Tier 2): statistics gathered and coefficients learned on task data.

- ``learn_fisher``: each model's diagonal Fisher on its task → a statistics file + a ``fisher`` node;
- ``learn_regmean``: each model's per-layer input Gram matrices → a statistics file + a ``regmean``
  node (exact or conjugate-gradient solve);
- ``learn_adamerging``: task-wise or layer-wise task-arithmetic coefficients by entropy minimisation
  on unlabeled inputs → a ``task_arithmetic`` node with the learned values;
- ``learn_atlas``: one coefficient per parameter block of each task vector, from a few samples →
  a ``task_arithmetic`` node with per-tensor schedules;
- ``learn_mats``: RegMean's Gram matrices → a statistics file + a ``mats`` node (conjugate gradient
  from task arithmetic);
- ``learn_self_positioning``: one coefficient per task vector by SGD on a balanced labelled probe
  set → a ``task_arithmetic`` node with the learned values;
- ``learn_concrete``: a Concrete mask shared by the task vectors, meta-learned by entropy
  minimisation on unlabeled inputs → a mask file + a ``concrete`` node.

Every learner takes the recipe, the merge node to learn and the tasks (``engine.evaluation``), a
seed, a device, a progress callback and a cancel token, and returns a ``LearnResult`` whose recipe
reproduces the merge without data. This package sits above ``engine.evaluation`` and ``engine.graph``;
the merge methods themselves stay pure tensor functions (``engine.methods.data_merge``).
"""

from engine.learn.adamerging import learn_adamerging
from engine.learn.atlas import learn_atlas
from engine.learn.common import LearnResult, save_recipe
from engine.learn.concrete import learn_concrete
from engine.learn.fisher import learn_fisher
from engine.learn.mats import learn_mats
from engine.learn.regmean import learn_regmean
from engine.learn.self_positioning import learn_self_positioning

__all__ = ["LearnResult", "learn_adamerging", "learn_atlas", "learn_concrete", "learn_fisher", "learn_mats",
           "learn_regmean", "learn_self_positioning", "save_recipe"]
