"""``build_lm_zoo``: the LM domains demo, made locally from a seed with no download.

Steps (one progress bar across all of them, cancellable between optimizer steps):

1. gather every domain's train/val/test text (``engine.zoo.lm.corpus``) and write the held-out data
   files: perplexity text, multiple-choice JSONL and generation JSONL per domain and split;
2. train a byte-level BPE tokenizer on the training text of every domain;
3. pre-train a small Llama base on all domains → ``base/``;
4. fine-tune one full expert per domain but ``logs`` → ``experts/DOMAIN/``, and train a LoRA adapter
   (q/v projections) on ``logs`` → ``lora/logs/``;
5. measure every model's held-out perplexity per domain, write ``lm-zoo.json`` (the manifest),
   ``suite.json`` (the evaluation suite: per domain a ``text-perplexity``, a ``multiple-choice`` and a
   ``generation`` task over the held-out files, each with its domain's expert) and ``demo.json``
   (base + experts + LoRA → TIES → Save, and the merge, the base and the experts → Evaluate on the suite).

Written into a temporary sibling folder and renamed into place at the end. Same seed and size → the
same tensors (CPU, torch on 2 threads, same library versions).
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

import engine
from engine.errors import EngineInputError
from engine.runtime import CancelToken, ProgressTracker
from engine.runtime.progress import ProgressCallback
from engine.zoo.build import default_zoo_dir
from engine.zoo.lm import corpus
from engine.zoo.lm.train import fit, perplexity, save_tokenizer, token_stream, train_lora, train_tokenizer
from engine.zoo.train import Schedule

MANIFEST_FORMAT = "weightsmith-lm-zoo"
LORA_DOMAIN = "logs"
LORA_TARGETS = ("q_proj", "v_proj")
THREADS = 2
DEMO_METHOD = {"method": "ties", "density": 0.3, "lambda": 1.0}


@dataclass(frozen=True)
class LmZooSize:
    """How big an LM zoo to build: the Llama shape, text per domain, schedules, held-out items."""

    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    vocab: int
    context: int
    length: int  # training window, tokens
    train_chars: int  # training text per domain
    held_out_chars: int  # val and test text per domain
    pretrain: Schedule
    finetune: Schedule
    lora: Schedule
    lora_rank: int
    eval_blocks: int  # blocks of ``length`` tokens per domain and split in the build's perplexity figures
    choice_items: int
    generate_items: int
    shard_size: str

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if not isinstance(v, Schedule)}
        out.update({k: dict(v.__dict__) for k, v in self.__dict__.items() if isinstance(v, Schedule)})
        return out


LM_SIZES: dict[str, LmZooSize] = {
    "default": LmZooSize(
        "default", hidden=128, intermediate=384, layers=4, heads=4, vocab=4096, context=256, length=128,
        train_chars=300_000, held_out_chars=30_000,
        pretrain=Schedule(250, 2e-3, batch=8, weight_decay=0.05, warmup=20),
        finetune=Schedule(50, 1e-3, batch=8, warmup=5), lora=Schedule(60, 3e-3, batch=8, warmup=5), lora_rank=8,
        eval_blocks=16, choice_items=100, generate_items=50, shard_size="2MB"),
    "reduced": LmZooSize(
        "reduced", hidden=64, intermediate=128, layers=2, heads=4, vocab=768, context=256, length=64,
        train_chars=40_000, held_out_chars=6_000,
        pretrain=Schedule(100, 3e-3, batch=8, warmup=10),
        finetune=Schedule(40, 2e-3, batch=8, warmup=5), lora=Schedule(40, 8e-3, batch=8, warmup=5), lora_rank=4,
        eval_blocks=8, choice_items=10, generate_items=5, shard_size="200KB"),
}


def default_lm_zoo_dir() -> Path:
    """Where the LM zoo lives unless told otherwise: ``lm-zoo`` beside the image zoo."""
    return default_zoo_dir().parent / "lm-zoo"


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def evaluation_suite(domains: list[str], experts: list[str], data_files: dict[str, dict[str, dict[str, str]]],
                     spec: LmZooSize) -> dict[str, Any]:
    """The suite manifest: per domain its perplexity, multiple-choice and generation tasks (val and test
    files; the domain's full expert as the reference). Perplexity scores the same blocks as the
    build's own figures (``spec.eval_blocks`` blocks of ``spec.length`` tokens)."""
    tasks = []
    for d in domains:
        files = data_files[d]
        expert = {"expert": f"experts/{d}"} if d in experts else {}
        tasks += [
            {"name": d, "kind": "text-perplexity", "description": corpus.DOMAINS[d].description,
             "data": files["text"], "block_size": spec.length, "max_tokens": spec.length * spec.eval_blocks, **expert},
            {"name": f"{d}-choice", "kind": "multiple-choice", "description": f"{d}: pick the true next line",
             "data": files["multiple_choice"], **expert},
            {"name": f"{d}-complete", "kind": "generation", "description": f"{d}: complete a line",
             "data": files["generation"], "max_new_tokens": 24, "stop": ["\n"], "match": "exact", **expert},
        ]
    return {"format": "weightsmith-suite", "version": 1, "name": "lm-zoo",
            "description": "The LM demo's held-out data per domain: perplexity, multiple choice, line completion.",
            "base": "base", "tasks": tasks}


def demo_recipe(experts: list[str], lora: str | None, method: dict[str, Any]) -> dict[str, Any]:
    """The ready recipe: base + every expert (and the LoRA adapter) → one merge → Save ``merged/``; the
    merge, the base and every full expert → Evaluate on ``suite.json``."""
    nodes = [{"id": "base", "type": "checkpoint", "params": {"path": "base"}}]
    nodes += [{"id": e, "type": "checkpoint", "params": {"path": f"experts/{e}"}} for e in experts]
    inputs = list(experts)
    if lora:
        nodes.append({"id": f"{lora}_lora", "type": "checkpoint", "params": {"path": f"lora/{lora}"}})
        inputs.append(f"{lora}_lora")
    nodes += [{"id": "merge", "type": "merge", "params": method},
              {"id": "save", "type": "save", "params": {"path": "merged", "dtype": "fp32", "shard_size": "2MB"}},
              {"id": "evaluate", "type": "evaluate", "params": {"suite": "suite.json", "split": "test"}}]
    edges = [{"from": "base", "to": "merge", "port": "base"}]
    edges += [{"from": n, "to": "merge", "port": "models"} for n in inputs]
    edges.append({"from": "merge", "to": "save", "port": "model"})
    edges += [{"from": n, "to": "evaluate", "port": "models"} for n in ("merge", "base", *experts)]
    return {"format": "weightsmith-recipe", "version": 1, "name": "lm-zoo-demo", "nodes": nodes, "edges": edges}


def build_lm_zoo(directory: str | Path | None = None, *, size: str = "default", seed: int = 0,
                 progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> Path:
    """Build the LM zoo into ``directory`` (default: ``default_lm_zoo_dir()``), replacing what is there.

    Returns the path of the written ``lm-zoo.json``. ``size`` is ``default`` (under 3 minutes on two
    CPU cores) or ``reduced`` (seconds; for tests). Raises ``Cancelled`` when ``cancel`` is set.
    """
    if size not in LM_SIZES:
        raise ValueError(f"unknown LM zoo size '{size}' (use {', '.join(LM_SIZES)})")
    try:
        from transformers import LlamaConfig, LlamaForCausalLM
        from transformers.utils import logging as hf_logging
    except ImportError as exc:
        raise EngineInputError("the LM zoo needs transformers, which the desktop bundle leaves out: build it from a "
                               "pip installation of weightsmith") from exc
    spec = LM_SIZES[size]
    out = Path(directory).expanduser() if directory is not None else default_lm_zoo_dir()
    cancel = cancel or CancelToken()
    domains = corpus.available_domains()
    experts = [d for d in domains if d != LORA_DOMAIN]
    steps = (len(domains) + 1 + spec.pretrain.steps + len(experts) * spec.finetune.steps + spec.lora.steps
             + len(domains) + 2)
    tracker = ProgressTracker(progress, "building LM zoo", steps)

    def step(message: str = "") -> None:
        cancel.raise_if_cancelled()
        tracker.advance(message=message)

    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # transformers' shard-writing bars; our progress is the tracker's
    tmp = out.parent / f".{out.name}.building"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        train_docs, held_out, data_files = {}, {}, {}
        for i, domain in enumerate(domains):
            train_docs[domain] = corpus.take(domain, "train", seed, spec.train_chars)
            folder = tmp / "data" / domain
            folder.mkdir(parents=True)
            files: dict[str, dict[str, str]] = {"text": {}, "multiple_choice": {}, "generation": {}}
            for j, split in enumerate(("val", "test")):
                text = "\n".join(corpus.take(domain, split, seed, spec.held_out_chars))
                held_out[domain, split] = text
                (folder / f"{split}.txt").write_text(text, encoding="utf-8")
                rng = np.random.default_rng([seed, 100 + i, j])
                choice, generate = corpus.held_out_items(text, rng, spec.choice_items, spec.generate_items)
                _write_jsonl(folder / f"choice-{split}.jsonl", choice)
                _write_jsonl(folder / f"generate-{split}.jsonl", generate)
                files["text"][split] = f"data/{domain}/{split}.txt"
                files["multiple_choice"][split] = f"data/{domain}/choice-{split}.jsonl"
                files["generation"][split] = f"data/{domain}/generate-{split}.jsonl"
            data_files[domain] = files
            step(f"text: {domain}")

        tok = train_tokenizer([d for domain in domains for d in train_docs[domain]], spec.vocab)
        streams = {d: token_stream(tok, train_docs[d]) for d in domains}
        held = {key: token_stream(tok, [text]) for key, text in held_out.items()}
        step("tokenizer")

        ids = {k: tok.token_to_id(v) for k, v in (("bos_token_id", "<s>"), ("eos_token_id", "</s>"), ("pad_token_id", "<pad>"))}
        config = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=spec.hidden, intermediate_size=spec.intermediate,
                             num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
                             num_key_value_heads=spec.heads, max_position_embeddings=spec.context,
                             tie_word_embeddings=False, **ids)
        torch.manual_seed(seed)
        base = LlamaForCausalLM(config)
        fit(base, list(base.parameters()), torch.cat([streams[d] for d in domains]), spec.pretrain, spec.length,
            seed, lambda: step("pre-training"))

        def save_model(model, folder: Path) -> None:
            model.save_pretrained(folder, max_shard_size=spec.shard_size)
            save_tokenizer(tok, folder, spec.context)

        def scores(model) -> dict[str, dict[str, float]]:
            return {d: {s: round(perplexity(model, held[d, s], spec.length, spec.eval_blocks), 3) for s in ("val", "test")}
                    for d in domains}

        save_model(base, tmp / "base")
        ppl = {"base": scores(base)}
        step("scoring base")

        for i, domain in enumerate(experts):
            model = copy.deepcopy(base)
            fit(model, list(model.parameters()), streams[domain], spec.finetune, spec.length, seed + 1 + i,
                lambda d=domain: step(f"fine-tuning {d}"))
            save_model(model, tmp / "experts" / domain)
            ppl[domain] = scores(model)
            step(f"scoring {domain}")
            del model

        lora_name = f"{LORA_DOMAIN}_lora"
        model, alpha = copy.deepcopy(base), 2.0 * spec.lora_rank
        factors = train_lora(model, LORA_TARGETS, spec.lora_rank, alpha, streams[LORA_DOMAIN],
                             spec.lora, spec.length, seed + 1 + len(experts), lambda: step(f"LoRA {LORA_DOMAIN}"))
        _save_adapter(tmp / "lora" / LORA_DOMAIN, factors, spec.lora_rank, alpha)
        with torch.no_grad():
            for name, a in factors.items():
                if name.endswith("lora_A.weight"):
                    module = name[len("base_model.model."): -len(".lora_A.weight")]
                    b = factors[name.replace("lora_A", "lora_B")]
                    model.get_submodule(module).weight += (alpha / spec.lora_rank) * (b @ a)
        ppl[lora_name] = scores(model)
        step(f"scoring {lora_name}")
        del model

        params = sum(p.numel() for p in base.parameters())
        manifest = {
            "format": MANIFEST_FORMAT, "version": 1, "name": "lm-zoo",
            "description": "Weightsmith's LM domains demo: a small Llama pre-trained on mixed text from the Python "
                           "installation and generated data, one full expert per domain and a LoRA expert.",
            "architecture": {"kind": "hf-causal-lm", "model_type": "llama", "parameters": params,
                             "hidden_size": spec.hidden, "intermediate_size": spec.intermediate,
                             "num_hidden_layers": spec.layers, "num_attention_heads": spec.heads,
                             "vocab_size": config.vocab_size, "max_position_embeddings": spec.context},
            "base": "base",
            "domains": {d: {"description": corpus.DOMAINS[d].description, "data": data_files[d]} for d in domains},
            "experts": {d: {"path": f"experts/{d}", "domain": d, "kind": "full"} for d in experts},
            "lora": {lora_name: {"path": f"lora/{LORA_DOMAIN}", "domain": LORA_DOMAIN, "kind": "lora",
                                 "rank": spec.lora_rank, "target_modules": list(LORA_TARGETS)}},
            "suite": "suite.json", "demo": "demo.json",
            "build": {"size": size, "seed": seed, "sizes": spec.to_json(), "torch": torch.__version__,
                      "threads": THREADS, "weightsmith": engine.__version__,
                      "perplexity": {"block": spec.length, "blocks": spec.eval_blocks, "models": ppl}},
        }
        manifest["build"]["seconds"] = round(time.perf_counter() - start, 1)
        (tmp / "lm-zoo.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        (tmp / "suite.json").write_text(json.dumps(evaluation_suite(domains, experts, data_files, spec), indent=1)
                                        + "\n", encoding="utf-8")
        (tmp / "demo.json").write_text(json.dumps(demo_recipe(experts, LORA_DOMAIN, DEMO_METHOD), indent=1) + "\n",
                                       encoding="utf-8")
        step("done")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        torch.set_num_threads(threads)
        if bars:
            hf_logging.enable_progress_bar()
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out / "lm-zoo.json"


def _save_adapter(folder: Path, factors: dict[str, torch.Tensor], rank: int, alpha: float) -> None:
    """A PEFT-format LoRA adapter folder: adapter_config.json + adapter_model.safetensors."""
    folder.mkdir(parents=True)
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": "../../base",
              "r": rank, "lora_alpha": alpha, "lora_dropout": 0.0, "target_modules": list(LORA_TARGETS),
              "bias": "none", "fan_in_fan_out": False, "use_rslora": False, "modules_to_save": None,
              "inference_mode": True}
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    save_file(factors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
