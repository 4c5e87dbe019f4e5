"""The LM domains demo: a small Llama base with its own tokenizer, domain experts and a LoRA expert.

``build_lm_zoo(directory, size=..., seed=...)`` writes Hugging Face model folders, a PEFT adapter,
held-out data per domain, the manifest ``lm-zoo.json`` and the recipe ``demo.json``; see
``engine.zoo.lm.build`` and docs/zoo.md.
"""

from engine.zoo.lm.build import LM_SIZES, LmZooSize, build_lm_zoo, default_lm_zoo_dir

__all__ = ["LM_SIZES", "LmZooSize", "build_lm_zoo", "default_lm_zoo_dir"]
