"""Tiny Hugging Face models made here from a seed (no download), for the task-kind tests: a byte-level BPE
tokenizer trained on a few lines, a Llama causal LM and sequence classifier, a ViT image classifier and
a CLIP model, each saved as a model folder; plus small image folders and direct reference computations."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

LINES = [
    "the cat sat on the mat", "the dog ran in the park", "a cat and a dog play", "red apples and green pears",
    "def add(x, y): return x + y", "print('hello world')", "one two three four five", "blue sky over the sea",
]
CONTEXT = 48


def make_tokenizer():
    """A fast tokenizer (byte-level BPE, 300 tokens) with <s>, </s> and <pad>; adds no special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(LINES * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   model_max_length=CONTEXT)


def llama_config(tok, **extra):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=CONTEXT,
                       tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id, **extra)


def save(model, tok, folder: Path) -> Path:
    model.save_pretrained(folder)
    if tok is not None:
        tok.save_pretrained(folder)
    return folder


def causal_lm(folder: Path, seed: int = 0, tok=None) -> Path:
    """A LlamaForCausalLM (2 layers, hidden 16, context 48) with its tokenizer, saved to ``folder``."""
    from transformers import LlamaForCausalLM

    tok = tok or make_tokenizer()
    torch.manual_seed(seed)
    return save(LlamaForCausalLM(llama_config(tok)).eval(), tok, folder)


def sequence_classifier(folder: Path, seed: int = 0) -> Path:
    """A LlamaForSequenceClassification with classes negative/positive."""
    from transformers import LlamaForSequenceClassification

    tok = make_tokenizer()
    torch.manual_seed(seed)
    config = llama_config(tok, num_labels=2, id2label={0: "negative", 1: "positive"},
                          label2id={"negative": 0, "positive": 1})
    return save(LlamaForSequenceClassification(config).eval(), tok, folder)


def vit_classifier(folder: Path, seed: int = 0, processor: bool = True) -> Path:
    """A ViTForImageClassification on 8×8 images, classes blue/red; its image processor unless told not."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(seed)
    config = ViTConfig(image_size=8, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=32, num_labels=2, id2label={0: "blue", 1: "red"},
                       label2id={"blue": 0, "red": 1})
    save(ViTForImageClassification(config).eval(), None, folder)
    if processor:
        processor = ViTImageProcessor(size={"height": 8, "width": 8}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
        processor.save_pretrained(folder)
    return folder


def clip_model(folder: Path, seed: int = 0) -> Path:
    """A CLIPModel (one layer per tower, 8×8 images) with the tiny tokenizer; no image processor."""
    from transformers import CLIPConfig, CLIPModel

    tok = make_tokenizer()
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={"vocab_size": len(tok), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16, "bos_token_id": tok.bos_token_id,
                     "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 8, "patch_size": 4},
        projection_dim=8)
    return save(CLIPModel(config).eval(), tok, folder)


def image_folder(folder: Path, size: int = 12) -> Path:
    """Class folders ``blue`` and ``red`` with three noisy solid-colour PNGs each (``size`` pixels)."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for name, colour in (("blue", (20, 40, 220)), ("red", (220, 30, 30))):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            noise = torch.randint(-30, 30, (size, size, 3), generator=g)
            pixels = (torch.tensor(colour) + noise).clamp(0, 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(folder / name / f"{i}.png")
    return folder


def weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a saved model folder, fp32."""
    from engine.checkpoints import open_checkpoint

    with open_checkpoint(folder) as ckpt:
        return {n: ckpt.get(n, dtype=torch.float32) for n in ckpt.names}


@torch.no_grad()
def continuation_loglik(model, context: list[int], continuation: list[int]) -> float:
    """Σ log P(continuation token | everything before it), by a direct loop over positions."""
    full = torch.tensor([context + continuation])
    logits = model(input_ids=full).logits[0]
    total = 0.0
    for i in range(len(context), len(context) + len(continuation)):
        total += float(F.log_softmax(logits[i - 1].double(), dim=-1)[full[0, i]])
    return total


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
