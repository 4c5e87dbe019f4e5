"""The Task protocol: what the evaluation engine (and data-dependent merge methods) need from a task.

A task names itself, knows its classes, serves data splits (``val`` and ``test`` labelled, ``train``
for methods that fit on labelled data, ``unlabeled`` inputs for test-time methods such as AdaMerging),
and turns a state dict into a model:

- ``build_model(state_dict, device)`` returns a ready ``nn.Module`` (forward hooks on its
  ``nn.Linear`` modules see each layer's inputs; see ``engine.evaluation.hooks``);
- ``forward(params, inputs)`` is the same network as a pure function of a tensor dict, through
  ``torch.func.functional_call`` (differentiable in ``params``: what AdaMerging optimizes through).

The state dict a task receives holds the merged tensors only (a zoo backbone); tensors the task keeps
for itself (its classification head) are added by the task. ``ClassifierTask`` implements the
protocol for any classifier given a network skeleton, fixed head tensors and a data file.

Optional, for tasks that are not plain classification (``engine.evaluation.lm_tasks`` and others):
``accumulator()`` (how outputs are scored; ``engine.evaluation.metrics``), ``notes(split)`` (what a
result should say about the data, such as cut texts) and ``max_batch_size(device)`` (examples per
batch within the task's memory budget). For the learners (``engine.learn.objectives``), whose default
is classification's cross-entropy and softmax entropy: ``training_loss(outputs, labels)``,
``prediction_entropy(outputs, inputs)``, ``token_mask(inputs)`` (which positions the model is given
are real tokens, for per-token statistics) and ``learnable`` (False: nothing can be learned through
the outputs, as for generation). Tasks come from the task kinds a suite manifest declares
(``engine.evaluation.task_kinds``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Protocol, runtime_checkable

import torch
from torch import nn

from engine.errors import EngineInputError

SPLITS = ("train", "val", "test", "unlabeled")


@dataclass(frozen=True)
class Split:
    """One split's inputs [n, ...] and labels [n] (None for the unlabeled split)."""

    inputs: torch.Tensor
    labels: torch.Tensor | None

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


@runtime_checkable
class Task(Protocol):
    """A classification task a model can be evaluated on."""

    name: str
    classes: tuple[str, ...]
    expert: Path | None  # the task's own fine-tuned checkpoint: the denominator of normalized accuracy

    @property
    def num_classes(self) -> int: ...

    @property
    def splits(self) -> tuple[str, ...]: ...

    def data(self, split: str) -> Split:
        """The split's tensors (on the CPU), loaded on first use."""

    def build_model(self, state_dict: Mapping[str, torch.Tensor], device: torch.device | str = "cpu") -> nn.Module:
        """The task's network with ``state_dict`` (plus the task's own tensors) loaded, in eval mode."""

    def forward(self, params: Mapping[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        """Logits of ``inputs`` under ``params`` (the merged tensors), as a pure function."""

    def fingerprint(self) -> str:
        """Changes whenever the task's data, head or network change (a cache key part)."""


DataLoader = Callable[[], dict[str, Split]]


@dataclass
class ClassifierTask:
    """A classifier task: a network skeleton + fixed tensors (the head) + labelled splits from a loader.

    ``make_module()`` builds the untrained network; ``fixed`` tensors (names as in the network's state
    dict, e.g. ``head.weight``) are added to every state dict; ``load_data()`` returns the splits.
    ``identity`` is a string that changes with the data and head files (a cache key part).
    """

    name: str
    classes: tuple[str, ...]
    make_module: Callable[[], nn.Module]
    fixed: Mapping[str, torch.Tensor]
    load_data: DataLoader
    identity: str
    expert: Path | None = None
    description: str = ""
    _data: dict[str, Split] | None = field(default=None, repr=False)
    _skeleton: nn.Module | None = field(default=None, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self._load())

    def _load(self) -> dict[str, Split]:
        if self._data is None:
            self._data = self.load_data()
        return self._data

    def data(self, split: str) -> Split:
        splits = self._load()
        if split not in splits:
            raise EngineInputError(f"task '{self.name}' has no '{split}' split (it has {', '.join(splits)})")
        return splits[split]

    def _full_state(self, state_dict: Mapping[str, torch.Tensor], device: torch.device | str) -> dict[str, torch.Tensor]:
        state = dict(state_dict)
        state.update({k: v.to(device) for k, v in self.fixed.items()})
        return state

    def expected_names(self) -> list[str]:
        """The tensor names the task needs from a model (the network's minus the task's own)."""
        return [k for k in self.skeleton().state_dict() if k not in self.fixed]

    def check_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Raise EngineInputError naming every missing or wrongly shaped tensor."""
        reference = self.skeleton().state_dict()
        missing = [k for k in self.expected_names() if k not in state_dict]
        if missing:
            raise EngineInputError(f"the model lacks {len(missing)} tensor(s) task '{self.name}' needs: "
                                   f"{', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
        for k in self.expected_names():
            if tuple(state_dict[k].shape) != tuple(reference[k].shape):
                raise EngineInputError(f"tensor shape {tuple(state_dict[k].shape)} does not fit task '{self.name}', "
                                       f"which expects {tuple(reference[k].shape)}", tensor=k)

    def skeleton(self) -> nn.Module:
        """The network on the meta device (names and shapes, no memory), built once."""
        if self._skeleton is None:
            with torch.device("meta"):
                self._skeleton = self.make_module().eval()
        return self._skeleton

    def build_model(self, state_dict: Mapping[str, torch.Tensor], device: torch.device | str = "cpu") -> nn.Module:
        """The network using ``state_dict``'s tensors (moved to ``device`` when elsewhere; not copied)."""
        self.check_state_dict(state_dict)
        with torch.device("meta"):
            module = self.make_module()
        state = {k: state_dict[k].to(device) for k in self.expected_names()}
        module.load_state_dict(self._full_state(state, device), assign=True)
        return module.eval()

    def forward(self, params: Mapping[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        """Logits of ``inputs`` with the network's tensors taken from ``params`` (plus the head)."""
        return torch.func.functional_call(self.skeleton(), self._full_state(params, inputs.device), (inputs,),
                                          strict=True)

    def fingerprint(self) -> str:
        return hashlib.blake2b(f"{self.name}|{self.identity}".encode(), digest_size=12).hexdigest()
