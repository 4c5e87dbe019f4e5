"""Training pieces of the LM zoo: the BPE tokenizer, causal-LM training, LoRA factors, perplexity.

Everything runs on the CPU in fp32. ``step_callback`` is called after each optimizer step (progress
and cancellation live there).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from engine.zoo.train import Schedule

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
StepCallback = Callable[[], None]


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE ``tokenizers.Tokenizer`` trained on ``texts`` (no unknown tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok


def save_tokenizer(tok, folder: Path, context: int) -> None:
    """Write ``tok`` as a transformers fast tokenizer (tokenizer.json, tokenizer_config.json,
    special_tokens_map.json), loadable with ``AutoTokenizer.from_pretrained(folder)``."""
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": context,
              "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False, **SPECIAL_TOKENS}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps(SPECIAL_TOKENS, indent=1) + "\n", encoding="utf-8")


def token_stream(tok, documents: list[str]) -> torch.Tensor:
    """The documents' token ids, one after the other, each followed by the end-of-text token."""
    eos = tok.token_to_id(SPECIAL_TOKENS["eos_token"])
    ids: list[int] = []
    for enc in tok.encode_batch(documents):
        ids.extend(enc.ids)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def fit(model: nn.Module, params: list[nn.Parameter], stream: torch.Tensor, schedule: Schedule, length: int,
        seed: int, step_callback: StepCallback) -> None:
    """Train ``params`` of a causal LM on random windows of ``length`` tokens of ``stream``."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    optim = torch.optim.AdamW(params, lr=schedule.lr, weight_decay=schedule.weight_decay)
    model.train()
    for step in range(schedule.steps):
        starts = rng.integers(0, len(stream) - length, schedule.batch)
        batch = torch.stack([stream[s:s + length] for s in starts.tolist()])
        for group in optim.param_groups:
            group["lr"] = schedule.lr_at(step)
        loss = model(input_ids=batch, labels=batch).loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        step_callback()
    model.eval()


class LoraLinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update ``scale · B @ A`` (B starts at zero)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.lora_A = nn.Parameter(torch.randn(rank, base.in_features) / math.sqrt(base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_A.T @ self.lora_B.T) * self.scale


def train_lora(model: nn.Module, targets: tuple[str, ...], rank: int, alpha: float, stream: torch.Tensor,
               schedule: Schedule, length: int, seed: int, step_callback: StepCallback) -> dict[str, torch.Tensor]:
    """Train LoRA factors on the ``targets`` linears of ``model`` (left unchanged) and return them under
    PEFT's names, ``base_model.model.<module>.lora_A.weight`` / ``lora_B.weight``."""
    torch.manual_seed(seed)
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped: dict[str, LoraLinear] = {}
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in targets and isinstance(child, nn.Linear):
                wrapped[f"{name}.{child_name}"] = lora = LoraLinear(child, rank, alpha)
                setattr(module, child_name, lora)
    try:
        params = [p for lora in wrapped.values() for p in (lora.lora_A, lora.lora_B)]
        fit(model, params, stream, schedule, length, seed, step_callback)
    finally:
        for full, lora in wrapped.items():
            parent, _, child_name = full.rpartition(".")
            setattr(model.get_submodule(parent), child_name, lora.base)
    out = {}
    for full, lora in wrapped.items():
        out[f"base_model.model.{full}.lora_A.weight"] = lora.lora_A.detach().clone().contiguous()
        out[f"base_model.model.{full}.lora_B.weight"] = lora.lora_B.detach().clone().contiguous()
    return out


@torch.no_grad()
def perplexity(model: nn.Module, stream: torch.Tensor, block: int, max_blocks: int, batch: int = 8) -> float:
    """exp(mean next-token NLL) over the first ``max_blocks`` non-overlapping blocks of ``stream``."""
    n = min(max_blocks, len(stream) // block)
    blocks = stream[: n * block].view(n, block)
    total, count = 0.0, 0
    model.eval()
    for i in range(0, n, batch):
        x = blocks[i:i + batch]
        logits = model(input_ids=x).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                                reduction="sum")
        total += float(nll)
        count += x[:, 1:].numel()
    return math.exp(total / count)
