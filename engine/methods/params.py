"""Parameter declarations shared by several method families (same name, range and help everywhere)."""

from __future__ import annotations

from engine.methods.base import Param
from engine.methods.linear import WEIGHT

__all__ = ["WEIGHT", "LAMBDA", "SCOPE", "SEED", "TIE_BREAK", "density", "normalize", "rescale"]

LAMBDA = Param("lambda", "float", 1.0, "global scaling of the merged task vector", min=-5.0, max=5.0,
               layerwise=True, typical=(0.0, 2.0))
SCOPE = Param("scope", "choice", "tensor",
              "where thresholds are computed: each tensor on its own, or the whole model (extra stats pass)",
              choices=("tensor", "model"))
TIE_BREAK = Param("tie_break", "choice", "keep_all",
                  "equal magnitudes at a trim cut: keep them all (fast), or keep exactly the count, split as "
                  "mergekit's sort splits them (a full sort per tensor; set by mergekit import)",
                  choices=("keep_all", "mergekit"))
SEED = Param("seed", "int", 0, "random seed: the same seed gives the same merge on every device",
             min=0, max=2**63 - 1)


def density(default: float, help: str = "fraction of each task vector's entries kept") -> Param:
    """The per-model, per-layer ``density`` parameter (mergekit's name) with a method's own default."""
    return Param("density", "float", default, help, min=0.0, max=1.0, per_model=True, layerwise=True)


def normalize(default: bool, help: str) -> Param:
    """The ``normalize`` switch (mergekit's name) with a method's own default and meaning."""
    return Param("normalize", "bool", default, help)


def rescale(default: str, choices: tuple[str, ...]) -> Param:
    """How survivors of a sparsification are rescaled.

    ``inverse``: divide each survivor by its keep probability (the DARE/DELLA papers);
    ``l1``: match the L1 norm of the unpruned task vector (mergekit's ``rescale: true``); ``none``.
    """
    return Param("rescale", "choice", default,
                 "rescale survivors: inverse of the keep probability (paper), match the L1 norm (mergekit), or none",
                 choices=choices)
