"""LoRA in, LoRA out: merging several PEFT LoRA adapters of one base into one adapter (``weightsmith merge-lora``).

``merge_lora`` (``merge``) reads the adapters' factors, checks that they adapt the same base
(``adapters``), combines each adapted weight's updates with the chosen method (``combinations``: PEFT's
``cat`` and SVD family, or KnOTS from ``engine.methods.knots``) and writes one adapter with
``engine.checkpoints.lora_writer``.
"""

from engine.lora_merge.combinations import KNOTS_COMBINES, LORA_METHODS
from engine.lora_merge.merge import LoraMerge, merge_lora

__all__ = ["KNOTS_COMBINES", "LORA_METHODS", "LoraMerge", "merge_lora"]
