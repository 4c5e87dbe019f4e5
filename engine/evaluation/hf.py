"""Hugging Face task adapters (optional extra ``weightsmith[hf]``; ``transformers`` is imported lazily).

- ``HFSequenceClassificationTask``: accuracy of a ``*ForSequenceClassification`` model on a CSV or
  JSONL file with a text and a label column;
- ``HFPerplexityTask``: next-token loss and perplexity of a causal language model on a text file.

Both implement the ``Task`` protocol: the network is built once from the model's ``config.json``
(``AutoModelFor….from_config``), and each state dict to score (a merged model, an expert) is copied
into it; ``forward(params, inputs)`` runs it through ``torch.func.functional_call`` (tied weights
follow the tensor they are tied to). Inputs are token ids [n, length]; the attention mask is derived
from the padding token. The model folder's tokenizer is used unless one is given.

Splits: the data file is the ``test`` split, and its inputs without labels are the ``unlabeled``
split (test-time methods such as AdaMerging adapt on the evaluation inputs, as in their paper);
``splits={"train": path, "val": path}`` adds further labelled files. Every problem with a data file
(missing, unreadable, malformed line, missing column, unknown label) raises ``EngineInputError``
naming the file and, where it applies, the line.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from engine.errors import EngineInputError
from engine.evaluation.metrics import TokenAccumulator
from engine.evaluation.tasks import Split


def _transformers():
    try:
        import transformers
    except ImportError as exc:
        raise EngineInputError("Hugging Face tasks need the optional extra: pip install 'weightsmith[hf]'") from exc
    return transformers


def _identity(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


# ---------------------------------------------------------------- data files


def read_labelled_file(path: str | Path, text_column: str = "text",
                       label_column: str = "label") -> list[tuple[str, Any]]:
    """(text, label) pairs of a ``.csv`` (header row) or ``.jsonl`` (one JSON object per line) file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise EngineInputError("data file not found", path=str(p))
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EngineInputError(f"cannot read the data file as UTF-8 text ({exc})", path=str(p)) from exc
    suffix = p.suffix.lower()
    if suffix == ".csv":
        rows = list(enumerate(csv.DictReader(text.splitlines()), start=2))
        columns = set(rows[0][1]) if rows else set()
    elif suffix in (".jsonl", ".json"):
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise EngineInputError(f"line {number} is not valid JSON ({exc})", path=str(p)) from exc
            if not isinstance(row, dict):
                raise EngineInputError(f"line {number} is not a JSON object", path=str(p))
            rows.append((number, row))
        columns = set().union(*(row for _, row in rows)) if rows else set()
    else:
        raise EngineInputError("unknown data file type (expected .csv or .jsonl)", path=str(p))
    if not rows:
        raise EngineInputError("the data file holds no examples", path=str(p))
    for column in (text_column, label_column):
        if column not in columns:
            raise EngineInputError(f"the data file has no '{column}' column (it has {', '.join(sorted(columns))})",
                                   path=str(p))
    out = []
    for number, row in rows:
        if not isinstance(row.get(text_column), str) or row.get(label_column) in (None, ""):
            raise EngineInputError(f"line {number} lacks a text or a label", path=str(p))
        out.append((row[text_column], row[label_column]))
    return out


def label_index(label: Any, classes: tuple[str, ...], where: str, path: Path) -> int:
    """A file's label as a class index: an integer (or digit string) index, or a class name."""
    if isinstance(label, bool):
        raise EngineInputError(f"{where}: label {label!r} is neither a class index nor a class name", path=str(path))
    if isinstance(label, int) or (isinstance(label, str) and label.strip().lstrip("-").isdigit()):
        index = int(label)
        if not 0 <= index < len(classes):
            raise EngineInputError(f"{where}: label {index} is outside 0…{len(classes) - 1}", path=str(path))
        return index
    if label in classes:
        return classes.index(label)
    raise EngineInputError(f"{where}: unknown label {label!r} (the model's classes are {', '.join(classes)})",
                           path=str(path))


# ---------------------------------------------------------------- the shared network handling


class _HFTask:
    """The network side shared by the adapters: config, tokenizer, one module reused for every model."""

    auto_class = ""

    def __init__(self, model: str | Path | Any, tokenizer: Any = None, *, name: str | None = None,
                 expert: str | Path | None = None):
        transformers = _transformers()
        if isinstance(model, (str, Path)):
            folder = Path(model).expanduser()
            if not (folder / "config.json").is_file():
                raise EngineInputError("not a Hugging Face model folder (no config.json)", path=str(folder))
            try:
                self.config = transformers.AutoConfig.from_pretrained(str(folder))
            except (OSError, ValueError, KeyError) as exc:
                raise EngineInputError(f"cannot read the model's config.json ({exc})", path=str(folder)) from exc
            self.identity = _identity(folder / "config.json")
            tokenizer = tokenizer if tokenizer is not None else str(folder)
            default_name = folder.name
        else:
            self.config = model
            self.identity = hashlib.blake2b(self.config.to_json_string().encode(), digest_size=12).hexdigest()
            default_name = self.config.model_type
        if tokenizer is None:
            raise EngineInputError("a model given as a config needs a tokenizer")
        if isinstance(tokenizer, (str, Path)):
            try:
                tokenizer = transformers.AutoTokenizer.from_pretrained(str(tokenizer))
            except (OSError, ValueError) as exc:
                raise EngineInputError(f"cannot load the tokenizer ({exc})", path=str(tokenizer)) from exc
        self.tokenizer = tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad if pad is not None else 0)
        self.name = name or default_name
        self.expert = Path(expert) if expert else None
        self._module: nn.Module | None = None
        self._data: dict[str, Split] = {}

    # the network ---------------------------------------------------------------------------------
    def module(self, device: torch.device | str = "cpu") -> nn.Module:
        """The network (built once, random weights until a state dict is loaded), on ``device``.

        Calling it with input ids returns the logits: hooks add the attention mask and unwrap the output.
        """
        if self._module is None:
            auto = getattr(_transformers(), self.auto_class)
            module = auto.from_config(self.config).float().eval()
            module.register_forward_pre_hook(self._add_mask, with_kwargs=True)
            module.register_forward_hook(lambda _m, _a, output: output.logits)
            self._module = module
        return self._module.to(device)

    def _add_mask(self, _module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        ids = args[0] if args else kwargs["input_ids"]
        return (), {**kwargs, "input_ids": ids, "attention_mask": (ids != self.pad_id).long()}

    def _aliases(self) -> dict[str, set[str]]:
        """Each parameter name → every name sharing its tensor (tied weights)."""
        groups: dict[int, set[str]] = {}
        for n, p in self.module().named_parameters(remove_duplicate=False):
            groups.setdefault(id(p), set()).add(n)
        return {n: names for names in groups.values() for n in names}

    def expected_names(self) -> list[str]:
        """The tensors a checkpoint must provide (one name per tied group)."""
        seen: set[str] = set()
        out = []
        aliases = self._aliases()
        for n in self.module().state_dict():
            if n not in seen:
                out.append(n)
                seen |= aliases.get(n, {n})
        return out

    def build_model(self, state_dict: Mapping[str, torch.Tensor], device: torch.device | str = "cpu") -> nn.Module:
        """The network with ``state_dict``'s tensors copied in, on ``device``, in eval mode."""
        module = self.module(device)
        missing, unexpected = module.load_state_dict(dict(state_dict), strict=False)
        aliases = self._aliases()
        missing = [n for n in missing if not (aliases.get(n, {n}) - {n}) & set(state_dict)]
        if missing or unexpected:
            problem = (f"lacks {len(missing)} tensor(s) such as '{missing[0]}'" if missing
                       else f"has {len(unexpected)} tensor(s) it does not know, such as '{unexpected[0]}'")
            raise EngineInputError(f"the model does not fit task '{self.name}' "
                                   f"({self.config.model_type}): it {problem}")
        return module.eval()

    def forward(self, params: Mapping[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        """Logits of the token ids ``inputs`` with the network's tensors taken from ``params``."""
        module = self.module(inputs.device)
        return torch.func.functional_call(module, dict(params), (inputs,), strict=False, tie_weights=True)

    def fingerprint(self) -> str:
        return hashlib.blake2b(f"{self.name}|{self.identity}|{self._data_identity()}".encode(),
                               digest_size=12).hexdigest()

    # data ----------------------------------------------------------------------------------------
    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self._files()) + ("unlabeled",)

    def data(self, split: str) -> Split:
        if split not in self._data:
            files = self._files()
            if split == "unlabeled":
                self._data[split] = Split(self.data("test").inputs, None)
            elif split in files:
                self._data[split] = self._load(files[split])
            else:
                raise EngineInputError(f"task '{self.name}' has no '{split}' split (it has {', '.join(self.splits)})")
        return self._data[split]

    def _files(self) -> dict[str, Path]:
        raise NotImplementedError

    def _load(self, path: Path) -> Split:
        raise NotImplementedError

    def _data_identity(self) -> str:
        return "|".join(f"{k}={_identity(p) if p.is_file() else p}" for k, p in self._files().items())


class HFSequenceClassificationTask(_HFTask):
    """Accuracy of a sequence-classification model on a labelled CSV/JSONL file.

    ``model``: a model folder (``config.json`` + tokenizer files) or a ``PretrainedConfig``;
    ``data_file``: the test split, with ``text_column`` and ``label_column`` (a class index or a name
    from the config's ``id2label``); ``splits``: further labelled files by split name. Texts are
    truncated to ``max_length`` tokens and padded to the longest.
    """

    auto_class = "AutoModelForSequenceClassification"

    def __init__(self, model: str | Path | Any, data_file: str | Path, tokenizer: Any = None, *,
                 splits: Mapping[str, str | Path] | None = None, text_column: str = "text",
                 label_column: str = "label", max_length: int = 128, name: str | None = None,
                 expert: str | Path | None = None):
        super().__init__(model, tokenizer, name=name, expert=expert)
        self.files = {"test": Path(data_file).expanduser(),
                      **{k: Path(v).expanduser() for k, v in (splits or {}).items()}}
        self.text_column, self.label_column, self.max_length = text_column, label_column, max_length
        labels = self.config.id2label
        self.classes = tuple(str(labels[i]) for i in range(self.config.num_labels))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _files(self) -> dict[str, Path]:
        return self.files

    def _load(self, path: Path) -> Split:
        rows = read_labelled_file(path, self.text_column, self.label_column)
        labels = [label_index(label, self.classes, f"example {i + 1}", path) for i, (_, label) in enumerate(rows)]
        ids = self.tokenizer([text for text, _ in rows], padding="longest", truncation=True,
                             max_length=self.max_length, return_tensors="pt")["input_ids"]
        return Split(ids.long(), torch.tensor(labels, dtype=torch.long))


class HFPerplexityTask(_HFTask):
    """Next-token loss and perplexity of a causal language model on a UTF-8 text file.

    The text is tokenized once and cut into blocks of ``block_size`` tokens (a text shorter than one
    block is one shorter block; the tail after the last full block is dropped), so no padding is
    needed. Scores (``TokenAccumulator``): ``accuracy`` is next-token accuracy, ``loss`` the mean
    negative log-likelihood per token, and ``engine.evaluation.metrics.perplexity(loss)`` the perplexity.
    """

    auto_class = "AutoModelForCausalLM"
    classes: tuple[str, ...] = ()

    def __init__(self, model: str | Path | Any, text_file: str | Path, tokenizer: Any = None, *,
                 block_size: int = 128, name: str | None = None, expert: str | Path | None = None):
        super().__init__(model, tokenizer, name=name, expert=expert)
        self.text_file = Path(text_file).expanduser()
        self.block_size = int(block_size)

    @property
    def num_classes(self) -> int:
        return int(self.config.vocab_size)

    def accumulator(self) -> TokenAccumulator:
        return TokenAccumulator()

    def _files(self) -> dict[str, Path]:
        return {"test": self.text_file}

    def _load(self, path: Path) -> Split:
        if not path.is_file():
            raise EngineInputError("text file not found", path=str(path))
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise EngineInputError(f"cannot read the text file as UTF-8 ({exc})", path=str(path)) from exc
        ids = self.tokenizer(text)["input_ids"]
        if len(ids) < 2:
            raise EngineInputError("the text file needs at least two tokens to score next-token prediction",
                                   path=str(path))
        size = min(self.block_size, len(ids))
        blocks = torch.tensor(ids[: len(ids) // size * size], dtype=torch.long).view(-1, size)
        return Split(blocks, blocks.clone())
