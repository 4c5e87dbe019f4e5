"""Causal language-model task kinds: ``text-perplexity``, ``multiple-choice`` and ``generation``.

All three need a causal LM (a model folder whose ``config.json`` names a ``…ForCausalLM`` class) and
its tokenizer (the model folder's, or a declared ``tokenizer`` folder). Inputs longer than the model's
context are cut from the left (the end of a prompt is kept) and the result notes the file and line.

- **text-perplexity**: a UTF-8 text file or a folder of ``.txt`` files (one domain). Each file is
  tokenized as one document (documents joined by the end-of-text token), the first ``max_tokens`` are
  kept (0: all) and cut into non-overlapping blocks of ``block_size`` tokens (at most the context; the
  last block may be shorter). Every token but a block's first is predicted from the ones before it
  in its block. Reports ``perplexity`` (primary, lower is better) = exp(``loss``), the mean negative
  log-likelihood per token in nats, next-token ``accuracy`` and the mean predictive ``entropy``;
  ``n`` counts predicted tokens. Inputs are [blocks, 2, block] (token ids, attention mask), labels the
  ids with ``IGNORE_INDEX`` on padding.
- **multiple-choice**: JSONL rows ``{"question" (or "context"): str, "choices": [str, …], "answer": index
  or the choice's text}``. A choice's score is the sum of the log-probabilities of its tokens given the
  question's (``log P(delimiter + choice | question)``; the question tokenized with the tokenizer's
  special tokens, the choice without, then joined). ``accuracy``: the best-scored choice is the answer;
  ``accuracy_norm``: the same with each score divided by the choice's length in characters (as
  lm-evaluation-harness's ``acc_norm``). A question runs through the model once; its key-value cache,
  repeated, carries every choice. A question longer than the context minus its longest choice is cut
  from the left. Inputs are [items, 1 + choices, 2, length]: the question's ids and attention mask
  (padded on the left), then each choice's (padded on the right); the module returns the
  [items, choices] log-likelihoods (−inf for a missing choice).
- **generation**: JSONL rows ``{"prompt": str, "reference": str or [str, …]}``. Greedy decoding (the
  most likely token each step: deterministic) of at most ``max_new_tokens``, stopped at the
  end-of-text token or at the first of the ``stop`` strings (cut off the output); the output is
  compared with each reference (``match``: ``exact``, ``contains``, or ``regex``: the reference is a
  regular expression searched in the output), after stripping surrounding whitespace unless ``strip``
  is false. Reports ``accuracy`` and the match's own metric (``exact_match``, ``contains`` or
  ``regex_match``), keeps the first ``keep_outputs`` outputs in the result (``outputs``: line, text,
  whether it matched), and notes every prompt whose generation reached ``max_new_tokens`` without
  stopping. Prompts are padded on the left; inputs are [items, 2, length], labels the items' indices.

``chat_template: true`` wraps each question or prompt as a user message through the tokenizer's chat
template (with the generation prompt); a tokenizer without one is an error.

For the learners (``engine.learn.objectives``), text-perplexity and multiple-choice tasks define
``training_loss`` (the mean next-token cross-entropy over real tokens — the task's scored ``loss`` —
or the cross-entropy of the choices' log-likelihoods against the answer) and ``prediction_entropy``
(of the next-token distributions at real tokens, or over the choices); a text-perplexity task also
gives ``token_mask``, so that statistics such as RegMean's Gram matrices leave padding out. A
generation task is not ``learnable``: its outputs are chosen tokens, through which nothing can be learned.
"""

from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import EngineInputError
from engine.evaluation.data_files import jsonl_rows, read_text, text_files
from engine.evaluation.hf import HF_PARAMS, HFTask, hf_options, model_folder
from engine.evaluation.metrics import IGNORE_INDEX, Scores, TokenAccumulator, binomial_stderr, softmax_entropy
from engine.evaluation.task_kinds import TaskEntry, TaskKind, TaskParam, register_task_kind
from engine.evaluation.tasks import Split

MATCHES = {"exact": "exact_match", "contains": "contains", "regex": "regex_match"}


class CausalLMTask(HFTask):
    """A task scored with a causal language model: head check, prompt encoding, example sizes.

    ``data``: a file (the test split) or ``{split: file}``; ``chat_template``: wrap prompts as a user
    message with the tokenizer's chat template.
    """

    auto_class = "AutoModelForCausalLM"
    heads = ("ForCausalLM", "LMHeadModel")
    head_text = "a causal language model (…ForCausalLM)"

    def __init__(self, model: str | Path | Any, data: str | Path | Mapping[str, str | Path], tokenizer: Any = None,
                 *, chat_template: bool = False, settings: Mapping[str, Any] | None = None, **options: Any):
        super().__init__(model, tokenizer, settings={**(settings or {}), "chat_template": chat_template}, **options)
        files = data if isinstance(data, Mapping) else {"test": data}
        self.files = {k: Path(v).expanduser() for k, v in files.items()}
        self.chat_template = bool(chat_template)
        if self.chat_template and not getattr(self.tokenizer, "chat_template", None):
            raise EngineInputError(f"{self._where()}: 'chat_template' is set but the tokenizer has no chat template "
                                   "(tokenizer_config.json has no \"chat_template\")",
                                   path=str(self.folder) if self.folder else None)

    @property
    def num_classes(self) -> int:
        return int(self.config.vocab_size)

    def _files(self) -> dict[str, Path]:
        return self.files

    def encode_prompt(self, text: str) -> list[int]:
        """Token ids of a question or prompt (through the chat template when declared)."""
        if self.chat_template:
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                      add_generation_prompt=True)
            return list(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
        return list(self.tokenizer(text, verbose=False)["input_ids"])

    def start_token(self, where: str, path: Path) -> list[int]:
        """A one-token context for an empty prompt: the begin- or end-of-text token."""
        for token in (self.tokenizer.bos_token_id, self.tokenizer.eos_token_id):
            if token is not None:
                return [int(token)]
        raise EngineInputError(f"{where}: the prompt is empty and the tokenizer has no begin- or end-of-text token "
                               "to start from", path=str(path))

    def limit(self) -> int:
        """The longest token sequence the model takes (its context; unbounded when the config says none)."""
        return self.context_length() or 1 << 30

    def row_bytes(self, length: int) -> int:
        """Estimated working memory of one token sequence of ``length`` in a forward pass with logits."""
        c = self.config
        hidden = int(getattr(c, "hidden_size", 0) or 768)
        inner = int(getattr(c, "intermediate_size", 0) or 4 * hidden)
        heads = int(getattr(c, "num_attention_heads", 0) or 12)
        return length * (int(c.vocab_size) * 4 * 4 + (8 * hidden + 3 * inner) * 4) + heads * length * length * 8

    def model_kwargs(self, inputs: torch.Tensor) -> dict[str, Any]:
        return {"input_ids": inputs[:, 0], "attention_mask": inputs[:, 1]}

    def _forward_params(self) -> frozenset[str]:
        """The keyword arguments the model's ``forward`` takes."""
        return frozenset(inspect.signature(self.network.module().forward).parameters)

    def _cache_name(self) -> str:
        """The key-value cache's argument and output name (``cache`` since transformers 5, else
        ``past_key_values``)."""
        return "cache" if "cache" in self._forward_params() else "past_key_values"


# ---------------------------------------------------------------- text-perplexity


class TextPerplexityTask(CausalLMTask):
    """Per-token loss, perplexity and next-token accuracy of a causal LM on a text file or folder."""

    def __init__(self, model: str | Path | Any, data: str | Path | Mapping[str, str | Path], tokenizer: Any = None,
                 *, block_size: int = 512, max_tokens: int = 0, **options: Any):
        super().__init__(model, data, tokenizer, settings={"block_size": block_size, "max_tokens": max_tokens},
                         **options)
        self.block_size, self.max_tokens = int(block_size), int(max_tokens)

    def accumulator(self) -> TokenAccumulator:
        return TokenAccumulator()

    def model_kwargs(self, inputs: torch.Tensor) -> dict[str, Any]:
        """Every token of the block but the last: its prediction would score nothing."""
        return {"input_ids": inputs[:, 0, :-1], "attention_mask": inputs[:, 1, :-1]}

    def token_mask(self, inputs: torch.Tensor) -> torch.Tensor:
        """Which positions the model is given [b, block − 1] are real tokens (not padding)."""
        return inputs[:, 1, :-1].bool()

    def training_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy over the predicted real tokens (the scored ``loss``)."""
        return F.cross_entropy(logits.flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX)

    def prediction_entropy(self, logits: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Mean entropy of the next-token distributions at the positions whose next token is real."""
        return softmax_entropy(logits)[inputs[:, 1, 1:].bool()].mean()

    def example_bytes(self) -> int:
        return self.row_bytes(self.longest_input())

    def _load(self, path: Path, notes: list[str]) -> Split:
        files = text_files(path)
        eos = self.tokenizer.eos_token_id
        ids: list[int] = []
        for i, f in enumerate(files):
            if i and eos is not None:
                ids.append(int(eos))
            ids.extend(self.tokenizer(read_text(f), verbose=False)["input_ids"])
        if len(ids) < 2:
            raise EngineInputError("the text needs at least two tokens to score next-token prediction", path=str(path))
        if self.max_tokens and len(ids) > self.max_tokens:
            notes.append(f"{path}: the first {self.max_tokens} of {len(ids)} tokens were scored (max_tokens)")
            ids = ids[: self.max_tokens]
        block = self.block_size
        if block > self.limit():
            notes.append(f"block_size {block} is longer than the model's context; blocks of {self.limit()} tokens")
            block = self.limit()
        block = min(block, len(ids))
        starts = [s for s in range(0, len(ids), block) if len(ids) - s >= 2]
        inputs = torch.zeros((len(starts), 2, block), dtype=torch.long)
        inputs[:, 0] = self.pad_id
        labels = torch.full((len(starts), block), IGNORE_INDEX, dtype=torch.long)
        for row, s in enumerate(starts):
            chunk = torch.tensor(ids[s:s + block], dtype=torch.long)
            inputs[row, 0, :len(chunk)] = chunk
            inputs[row, 1, :len(chunk)] = 1
            labels[row, :len(chunk)] = chunk
        return Split(inputs, labels)


# ---------------------------------------------------------------- multiple-choice


class MultipleChoiceTask(CausalLMTask):
    """Accuracy of a causal LM choosing among answers by their log-likelihood (see the module doc)."""

    def __init__(self, model: str | Path | Any, data: str | Path | Mapping[str, str | Path], tokenizer: Any = None,
                 *, question_field: str = "question", choices_field: str = "choices", answer_field: str = "answer",
                 delimiter: str = "", **options: Any):
        super().__init__(model, data, tokenizer, settings={"question": question_field, "choices": choices_field,
                                                           "answer": answer_field, "delimiter": delimiter}, **options)
        self.question_field, self.choices_field, self.answer_field = question_field, choices_field, answer_field
        self.delimiter = delimiter

    def accumulator(self) -> "ChoiceAccumulator":
        return ChoiceAccumulator()

    def training_loss(self, ll: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the choices' log-likelihoods [b, choices] against the answers (``labels[:, 0]``)."""
        return F.cross_entropy(ll.float(), labels[:, 0].long())

    def prediction_entropy(self, ll: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Mean entropy of the softmax over each question's choices (a missing choice adds nothing)."""
        return softmax_entropy(ll).mean()

    def example_bytes(self) -> int:
        if not self._data:
            return 5 * self.row_bytes(512)
        question = max(int(s.inputs[:, 0, 1].sum(-1).max()) for s in self._data.values())
        choice = max(int(s.inputs[:, 1:, 1].sum(-1).max()) for s in self._data.values())
        choices = max(int(s.inputs.shape[1]) - 1 for s in self._data.values())
        return self.row_bytes(question) + choices * self.row_bytes(question + choice)

    def _question(self, row: dict, line: int, path: Path) -> str:
        fields = [self.question_field] + (["context"] if self.question_field == "question" else [])
        for f in fields:
            if f in row:
                if not isinstance(row[f], str):
                    raise EngineInputError(f"line {line}: '{f}' must be text", path=str(path))
                return row[f]
        raise EngineInputError(f"line {line} has no '{self.question_field}' field (it has {', '.join(row)})",
                               path=str(path))

    def _answer(self, row: dict, choices: list[str], line: int, path: Path) -> int:
        if self.answer_field not in row:
            raise EngineInputError(f"line {line} has no '{self.answer_field}' field (it has {', '.join(row)})",
                                   path=str(path))
        answer = row[self.answer_field]
        if isinstance(answer, int) and not isinstance(answer, bool):
            if not 0 <= answer < len(choices):
                raise EngineInputError(f"line {line}: answer index {answer} is outside 0…{len(choices) - 1} "
                                       f"({len(choices)} choices)", path=str(path))
            return answer
        if isinstance(answer, str) and answer in choices:
            return choices.index(answer)
        raise EngineInputError(f"line {line}: answer {answer!r} is neither a choice index nor one of the choices",
                               path=str(path))

    def _load(self, path: Path, notes: list[str]) -> Split:
        items = []
        cut: list[int] = []
        limit = self.limit()
        for line, row in jsonl_rows(path):
            question = self._question(row, line, path)
            choices = row.get(self.choices_field)
            if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
                raise EngineInputError(f"line {line}: '{self.choices_field}' must be a list of texts", path=str(path))
            if len(choices) < 2:
                raise EngineInputError(f"line {line}: a choice list needs at least two entries, it has {len(choices)}",
                                       path=str(path))
            answer = self._answer(row, choices, line, path)
            context = self.encode_prompt(question) or self.start_token(f"line {line}", path)
            tokens = []
            for k, choice in enumerate(choices):
                ids = self.tokenizer(self.delimiter + choice, add_special_tokens=False, verbose=False)["input_ids"]
                if not ids:
                    raise EngineInputError(f"line {line}: choice {k} is empty", path=str(path))
                tokens.append(list(ids)[: limit - 1])
            keep = context[-(limit - max(len(t) for t in tokens)):]
            if len(keep) < len(context) or any(len(t) == limit - 1 for t in tokens):
                cut.append(line)
            items.append((answer, [len(c) for c in choices], keep, tokens))
        if cut:
            notes.append(f"{path}: {len(cut)} question(s) were cut to the model's context of {limit} tokens "
                         f"(line {cut[0]}{' and others' if len(cut) > 1 else ''})")
        width = max(len(t) for _, _, context, tokens in items for t in [context, *tokens])
        choices = max(len(tokens) for _, _, _, tokens in items)
        inputs = torch.zeros((len(items), 1 + choices, 2, width), dtype=torch.long)
        inputs[:, :, 0] = self.pad_id
        labels = torch.zeros((len(items), 1 + choices), dtype=torch.float32)
        for i, (answer, chars, context, tokens) in enumerate(items):
            labels[i, 0] = answer
            labels[i, 1:1 + len(chars)] = torch.tensor(chars, dtype=torch.float32)
            inputs[i, 0, 0, width - len(context):] = torch.tensor(context, dtype=torch.long)  # question: left-padded
            inputs[i, 0, 1, width - len(context):] = 1
            for k, ids in enumerate(tokens):  # choices: right-padded, continuing the question
                inputs[i, 1 + k, 0, :len(ids)] = torch.tensor(ids, dtype=torch.long)
                inputs[i, 1 + k, 1, :len(ids)] = 1
        return Split(inputs, labels)

    def model_kwargs(self, inputs: torch.Tensor) -> dict[str, Any]:
        mask = inputs[:, 0, 1]
        kwargs = {"input_ids": inputs[:, 0, 0], "attention_mask": mask,
                  "position_ids": (mask.cumsum(-1) - 1).clamp(min=0), "use_cache": True}
        if "logits_to_keep" in self._forward_params():
            kwargs["logits_to_keep"] = 1
        return kwargs

    def model_output(self, module: nn.Module, inputs: torch.Tensor, kwargs: dict, output: Any) -> torch.Tensor:
        """Each choice's log-likelihood [items, choices]: the questions ran once (``kwargs``); their cache,
        repeated per choice, carries the choices' forward pass."""
        n, per = inputs.shape[0], inputs.shape[1] - 1
        name = self._cache_name()
        cache = getattr(output, name)
        cache.batch_repeat_interleave(per)
        mask = inputs[:, 1:, 1].flatten(0, 1)
        length = int(mask.sum(-1).max())
        ids, mask = inputs[:, 1:, 0].flatten(0, 1)[:, :length], mask[:, :length]
        question_mask = kwargs["attention_mask"].repeat_interleave(per, dim=0)
        start = question_mask.sum(-1, keepdim=True)
        positions = start + torch.arange(length, device=ids.device)
        out = module.forward(input_ids=ids, attention_mask=torch.cat([question_mask, mask], dim=1),
                             position_ids=positions, use_cache=True, **{name: cache})
        first = output.logits[:, -1].repeat_interleave(per, dim=0)  # predicts each choice's first token
        row, pos = mask.bool().nonzero(as_tuple=True)
        picked = torch.where((pos == 0).unsqueeze(-1), first[row], out.logits[row, (pos - 1).clamp(min=0)])
        token_lp = F.log_softmax(picked.float(), dim=-1).gather(-1, ids[row, pos].unsqueeze(-1)).squeeze(-1)
        ll = torch.zeros(n * per, device=ids.device).index_add_(0, row, token_lp)
        ll = ll.masked_fill(~mask.bool().any(-1), -math.inf)
        return ll.view(n, per)


class ChoiceAccumulator:
    """Multiple-choice accuracy from per-choice log-likelihoods [b, choices] and labels [b, 1 + choices]
    (the answer index, then each choice's length in characters; 0 for a missing choice)."""

    def __init__(self) -> None:
        self.n = 0
        self.correct = 0
        self.correct_norm = 0

    def add(self, ll: torch.Tensor, labels: torch.Tensor) -> None:
        answer = labels[:, 0].long()
        chars = labels[:, 1:]
        self.n += len(answer)
        self.correct += int((ll.argmax(-1) == answer).sum())
        norm = torch.where(chars > 0, ll / chars.clamp(min=1), torch.full_like(ll, -math.inf))
        self.correct_norm += int((norm.argmax(-1) == answer).sum())

    def result(self) -> Scores:
        if self.n == 0:
            return Scores(0, None)
        acc, norm = self.correct / self.n, self.correct_norm / self.n
        return Scores(self.n, acc, binomial_stderr(acc, self.n), extra={"accuracy_norm": norm},
                      stderr={"accuracy_norm": binomial_stderr(norm, self.n)})


# ---------------------------------------------------------------- generation


@dataclass(frozen=True)
class GenerationItem:
    """One prompt's file, line and references."""

    path: Path
    line: int
    references: tuple[str, ...]


class GenerationTask(CausalLMTask):
    """Greedy generation scored against references (see the module doc)."""

    learnable = False  # its outputs are chosen tokens: no loss or entropy to learn through

    def __init__(self, model: str | Path | Any, data: str | Path | Mapping[str, str | Path], tokenizer: Any = None,
                 *, prompt_field: str = "prompt", reference_field: str = "reference", max_new_tokens: int = 32,
                 stop: tuple[str, ...] | list[str] = ("\n",), match: str = "exact", strip: bool = True,
                 keep_outputs: int = 100, **options: Any):
        if match not in MATCHES:
            raise EngineInputError(f"unknown match '{match}' (use {', '.join(MATCHES)})")
        super().__init__(model, data, tokenizer, settings={"prompt": prompt_field, "reference": reference_field,
                                                           "max_new_tokens": max_new_tokens, "stop": list(stop),
                                                           "match": match, "strip": strip}, **options)
        self.prompt_field, self.reference_field = prompt_field, reference_field
        self.max_new_tokens, self.stop, self.match = int(max_new_tokens), tuple(s for s in stop if s), match
        self.strip, self.keep_outputs = bool(strip), int(keep_outputs)
        if self.max_new_tokens >= self.limit():
            raise EngineInputError(f"{self._where()}: max_new_tokens {self.max_new_tokens} leaves no room for a prompt "
                                   f"in the model's context of {self.limit()} tokens")
        self.items: list[GenerationItem] = []

    def accumulator(self) -> "GenerationAccumulator":
        return GenerationAccumulator(self)

    def example_bytes(self) -> int:
        return self.row_bytes(self.longest_input() + self.max_new_tokens)

    def _references(self, row: dict, line: int, path: Path) -> tuple[str, ...]:
        if self.reference_field not in row:
            raise EngineInputError(f"line {line} has no '{self.reference_field}' field (it has {', '.join(row)})",
                                   path=str(path))
        refs = row[self.reference_field]
        refs = [refs] if isinstance(refs, str) else refs
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
            raise EngineInputError(f"line {line}: '{self.reference_field}' must be a text or a non-empty list of texts",
                                   path=str(path))
        if self.match == "regex":
            for r in refs:
                try:
                    re.compile(r)
                except re.error as exc:
                    raise EngineInputError(f"line {line}: reference {r!r} is not a valid regular expression ({exc})",
                                           path=str(path)) from None
        return tuple(refs)

    def _load(self, path: Path, notes: list[str]) -> Split:
        rows = []
        cut: list[int] = []
        room = self.limit() - self.max_new_tokens
        for line, row in jsonl_rows(path):
            prompt = row.get(self.prompt_field)
            if not isinstance(prompt, str):
                raise EngineInputError(f"line {line} has no '{self.prompt_field}' text (it has {', '.join(row)})",
                                       path=str(path))
            refs = self._references(row, line, path)
            ids = self.encode_prompt(prompt) or self.start_token(f"line {line}", path)
            if len(ids) > room:
                cut.append(line)
                ids = ids[-room:]
            rows.append(ids)
            self.items.append(GenerationItem(path, line, refs))
        if cut:
            notes.append(f"{path}: {len(cut)} prompt(s) were cut to {room} tokens (the model's context minus "
                         f"max_new_tokens; line {cut[0]}{' and others' if len(cut) > 1 else ''})")
        length = max(len(ids) for ids in rows)
        inputs = torch.zeros((len(rows), 2, length), dtype=torch.long)
        inputs[:, 0] = self.pad_id
        for i, ids in enumerate(rows):
            inputs[i, 0, length - len(ids):] = torch.tensor(ids, dtype=torch.long)
            inputs[i, 1, length - len(ids):] = 1
        first = len(self.items) - len(rows)
        return Split(inputs, torch.arange(first, len(self.items), dtype=torch.long))

    def model_kwargs(self, inputs: torch.Tensor) -> dict[str, Any]:
        mask = inputs[:, 1]
        kwargs = {"input_ids": inputs[:, 0], "attention_mask": mask,
                  "position_ids": (mask.cumsum(-1) - 1).clamp(min=0), "use_cache": True}
        if "logits_to_keep" in self._forward_params():
            kwargs["logits_to_keep"] = 1
        return kwargs


    def stopped(self, tokens: list[int]) -> bool:
        """Whether generated ``tokens`` end the generation (end-of-text token or a stop string)."""
        eos = self.tokenizer.eos_token_id
        if eos is not None and tokens and tokens[-1] == eos:
            return True
        text = self.tokenizer.decode(tokens)
        return any(s in text for s in self.stop)

    def model_output(self, module: nn.Module, inputs: torch.Tensor, kwargs: dict, output: Any) -> torch.Tensor:
        """Greedy continuation of each prompt: [items, steps] token ids, −1 after a row stopped."""
        n = inputs.shape[0]
        out = torch.full((n, self.max_new_tokens), -1, dtype=torch.long, device=inputs.device)
        done = torch.zeros(n, dtype=torch.bool)
        mask, position = kwargs["attention_mask"], kwargs["position_ids"][:, -1:]
        cache_name = self._cache_name()
        cache, logits = getattr(output, cache_name), output.logits[:, -1]
        steps = 0
        for step in range(self.max_new_tokens):
            token = logits.float().argmax(-1)
            out[:, step] = token.masked_fill(done.to(token.device), -1)
            steps = step + 1
            row_tokens = out[:, :steps].tolist()
            for i in range(n):
                if not done[i] and self.stopped(row_tokens[i]):
                    done[i] = True
            if bool(done.all()) or steps == self.max_new_tokens:
                break
            mask = torch.cat([mask, mask.new_ones((n, 1))], dim=1)
            position = position + 1
            step_out = module.forward(input_ids=token[:, None], attention_mask=mask, position_ids=position,
                                      use_cache=True, **{cache_name: cache})
            cache, logits = getattr(step_out, cache_name), step_out.logits[:, -1]
        return out[:, :steps]


class GenerationAccumulator:
    """Decodes generated tokens, cuts them at a stop, compares them with the references."""

    def __init__(self, task: GenerationTask):
        self.task = task
        self.n = 0
        self.correct = 0
        self.outputs: list[dict[str, Any]] = []
        self.unstopped: list[GenerationItem] = []

    def _text(self, row: list[int]) -> tuple[str, bool]:
        tok = self.task.tokenizer
        tokens = [t for t in row if t >= 0]
        stopped = tok.eos_token_id is not None and tok.eos_token_id in tokens
        if stopped:
            tokens = tokens[: tokens.index(tok.eos_token_id)]
        text = tok.decode(tokens, skip_special_tokens=True)
        positions = [text.find(s) for s in self.task.stop if s in text]
        if positions:
            return text[: min(positions)], True
        return text, stopped

    def _matches(self, output: str, references: tuple[str, ...]) -> bool:
        out = output.strip() if self.task.strip else output
        for ref in references:
            ref_text = ref.strip() if self.task.strip and self.task.match != "regex" else ref
            if ((self.task.match == "exact" and out == ref_text) or (self.task.match == "contains" and ref_text in out)
                    or (self.task.match == "regex" and re.search(ref_text, out))):
                return True
        return False

    def add(self, generated: torch.Tensor, labels: torch.Tensor) -> None:
        for row, index in zip(generated.tolist(), labels.tolist()):
            item = self.task.items[index]
            text, stopped = self._text(row)
            ok = self._matches(text, item.references)
            self.n += 1
            self.correct += ok
            if not stopped:
                self.unstopped.append(item)
            if len(self.outputs) < self.task.keep_outputs:
                self.outputs.append({"line": item.line, "output": text, "correct": ok})

    def result(self) -> Scores:
        metric = MATCHES[self.task.match]
        if self.n == 0:
            return Scores(0, None)
        acc = self.correct / self.n
        notes = []
        if self.unstopped:
            lines = [i.line for i in self.unstopped]
            notes.append(f"{self.unstopped[0].path}: {len(lines)} generation(s) reached max_new_tokens "
                         f"({self.task.max_new_tokens}) without a stop (line {lines[0]}"
                         f"{' and others' if len(lines) > 1 else ''})")
        return Scores(self.n, acc, binomial_stderr(acc, self.n), extra={metric: acc},
                      stderr={metric: binomial_stderr(acc, self.n)}, notes=tuple(notes), outputs=tuple(self.outputs))


# ---------------------------------------------------------------- the declared kinds

DATA = TaskParam("data", "path", None, "a file, or {\"test\": file, \"val\": file, \"train\": file}", required=True,
                 per_split=True)
CHAT = TaskParam("chat_template", "bool", False, "wrap each question or prompt as a user message with the "
                                                 "tokenizer's chat template")


def _lm_options(entry: TaskEntry, names: tuple[str, ...]) -> dict[str, Any]:
    return {**hf_options(entry), **{n: entry.values[n] for n in names}}


def _build_perplexity(entry: TaskEntry) -> list[TextPerplexityTask]:
    return [TextPerplexityTask(model_folder(entry), entry.values["data"],
                               **_lm_options(entry, ("block_size", "max_tokens")))]


def _build_choice(entry: TaskEntry) -> list[MultipleChoiceTask]:
    return [MultipleChoiceTask(model_folder(entry), entry.values["data"], **_lm_options(
        entry, ("question_field", "choices_field", "answer_field", "delimiter", "chat_template")))]


def _build_generation(entry: TaskEntry) -> list[GenerationTask]:
    return [GenerationTask(model_folder(entry), entry.values["data"], **_lm_options(
        entry, ("prompt_field", "reference_field", "max_new_tokens", "stop", "match", "strip", "keep_outputs",
                "chat_template")))]


CAUSAL_LM = "a causal language model folder (…ForCausalLM: config.json, weights, tokenizer)"

TEXT_PERPLEXITY = register_task_kind(TaskKind(
    "text-perplexity", "Text perplexity",
    "Per-token loss, perplexity and next-token accuracy of a causal LM on a domain of text.",
    params=(
        TaskParam("data", "path", None, "a UTF-8 text file or a folder of .txt files, or {\"test\": …, \"val\": …}",
                  required=True, per_split=True),
        TaskParam("block_size", "int", 512, "tokens per scored block (at most the model's context)", min=2,
                  max=1_000_000),
        TaskParam("max_tokens", "int", 0, "score only the first this many tokens (0: all)", min=0),
        *HF_PARAMS,
    ),
    build=_build_perplexity, data="plain UTF-8 text: a .txt file or a folder of them", model=CAUSAL_LM,
    metrics=("perplexity", "loss", "accuracy", "entropy"),
))

MULTIPLE_CHOICE = register_task_kind(TaskKind(
    "multiple-choice", "Multiple choice",
    "Pick the answer with the highest log-likelihood given the question (raw and length-normalised).",
    params=(
        DATA,
        TaskParam("question_field", "str", "question", "the field holding the question or context "
                                                       "('context' is read when 'question' is absent)"),
        TaskParam("choices_field", "str", "choices", "the field holding the list of choices (two or more)"),
        TaskParam("answer_field", "str", "answer", "the field holding the answer: a 0-based index or the "
                                                   "choice's text"),
        TaskParam("delimiter", "str", "", "text put between the question and each choice (e.g. a space)"),
        CHAT, *HF_PARAMS,
    ),
    build=_build_choice, data="JSONL: one {question, choices, answer} object per line", model=CAUSAL_LM,
    metrics=("accuracy", "accuracy_norm"),
))

GENERATION = register_task_kind(TaskKind(
    "generation", "Generation",
    "Greedy generation from prompts, compared with reference answers.",
    params=(
        DATA,
        TaskParam("prompt_field", "str", "prompt", "the field holding the prompt"),
        TaskParam("reference_field", "str", "reference", "the field holding the reference (a text or a list)"),
        TaskParam("max_new_tokens", "int", 32, "the most tokens generated per prompt", min=1, max=100_000),
        TaskParam("stop", "str", ["\n"], "strings that end a generation (cut off the output)", multiple=True),
        TaskParam("match", "choice", "exact", "how an output is compared with a reference", choices=tuple(MATCHES)),
        TaskParam("strip", "bool", True, "strip surrounding whitespace before comparing"),
        TaskParam("keep_outputs", "int", 100, "how many generated texts the result keeps", min=0),
        CHAT, *HF_PARAMS,
    ),
    build=_build_generation, data="JSONL: one {prompt, reference} object per line", model=CAUSAL_LM,
    metrics=("accuracy", "exact_match", "contains", "regex_match"),
))
