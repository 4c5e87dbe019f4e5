"""Hugging Face tasks: the network handling every ``transformers`` task shares, and text classification.

``HFTask`` is the base of the Hugging Face task kinds (here ``text-classification``; the language-model
kinds are in ``engine.evaluation.lm_tasks``, images in ``engine.evaluation.image_tasks``). It reads the
model folder's ``config.json``, checks that the model has the head the task needs (a base LM given to
text classification is an error naming the folder), loads the tokenizer (the model folder's, or a
declared one), and builds the network once with ``AutoModelFor….from_config``: one module per model
folder and class, shared by the suite's tasks (``Network``), into which each state dict to score (a
merge, an expert; tensors named as the checkpoint files name them) is copied. Calling the module with
a task's input tensor returns what the task's accumulator reads: forward hooks turn the tensor into
the model's keyword arguments and its output into logits (or per-choice log-likelihoods, generated
tokens; see the subclasses). ``forward(params, inputs)`` runs the same through
``torch.func.functional_call`` (tied weights follow the tensor they are tied to).

Batches are sized from a memory budget (``memory_mb``; 0 = half the free memory of a CUDA device, or
1 GiB elsewhere) and the task's example size. ``dtype`` ``fp16``/``bf16`` applies on a CUDA device; other
devices score in fp32 and the result notes it. ``transformers`` is imported lazily.

``HFSequenceClassificationTask``: accuracy of a ``*ForSequenceClassification`` model on a CSV or JSONL
file with a text and a label column (a class index or a name from the config's ``id2label``). Texts
are cut to ``max_length`` tokens (at most the model's context; the result notes how many were cut) and
padded on the right. Splits: the data file is ``test`` (or ``{"test": …, "val": …, "train": …}``), and
the test inputs without labels are the ``unlabeled`` split (for test-time methods such as AdaMerging).
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from engine.errors import EngineInputError
from engine.evaluation.data_files import file_identity, label_index, labelled_rows
from engine.evaluation.task_kinds import TaskEntry, TaskKind, TaskParam, register_task_kind
from engine.evaluation.tasks import Split

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CPU_BUDGET_MB = 1024
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


_IMPORT_LOCK = threading.Lock()


def transformers_module():
    """``transformers``, or an input error saying how to install it.

    The first import happens under a lock, with the lazy attributes used here resolved inside it: two
    worker threads importing ``transformers`` for the first time at once (a live session opening while a
    generation preview starts) can otherwise see a half-initialised module without ``AutoConfig``."""
    with _IMPORT_LOCK:
        try:
            import transformers

            transformers.AutoConfig, transformers.AutoTokenizer  # noqa: B018 (resolve the lazy module now)
        except ImportError as exc:
            raise EngineInputError("Hugging Face tasks need the optional extra: pip install 'weightsmith[hf]'") from exc
    return transformers


def _blake(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def _tokenizer_identity(folder: Path) -> str:
    """Identity of a folder's files other than weights (tokenizer files, configs)."""
    if not folder.is_dir():
        return file_identity(folder)
    return "|".join(file_identity(p) for p in sorted(folder.iterdir())
                    if p.is_file() and p.suffix not in (".safetensors", ".bin", ".pt", ".pth"))


def _saved_names(module: nn.Module) -> dict[str, str]:
    """Module name → checkpoint name for every tensor ``transformers`` renames when it saves (empty for
    versions that rename nothing)."""
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:
        return {}
    state = module.state_dict()
    by_tensor: dict[int, list[str]] = {}
    for name, tensor in state.items():
        by_tensor.setdefault(id(tensor), []).append(name)
    try:
        saved = revert_weight_conversion(module, dict(state))
    except Exception:  # an internal API of transformers: without it, names are taken as they are
        return {}
    out = {}
    for name, tensor in saved.items():
        names = by_tensor.get(id(tensor))
        if names:
            out[names.pop(0)] = name
    return {k: v for k, v in out.items() if k != v}


class Network:
    """One ``transformers`` module shared by every task that uses the same model folder and class (each
    task moves it to its device and dtype when it builds its model).

    Its hooks hand the call to the task that used it last (``adapter``, set by the task's
    ``build_model`` and ``forward``): ``adapter.model_kwargs(inputs)`` makes the model's arguments and
    ``adapter.model_output(module, inputs, kwargs, output)`` the result. Calls are not re-entrant.
    """

    def __init__(self, config: Any, auto_class: str):
        self.config = config
        self.auto_class = auto_class
        self.adapter: HFTask | None = None
        self._module: nn.Module | None = None
        self._saved: dict[str, str] | None = None
        self._call = threading.local()

    def module(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> nn.Module:
        """The module (random weights until a state dict is loaded), moved to ``device`` and ``dtype`` when
        given (built in fp32 on the CPU)."""
        if self._module is None:
            auto = getattr(transformers_module(), self.auto_class)
            module = auto.from_config(self.config).float().eval()
            module.register_forward_pre_hook(self._before, with_kwargs=True)
            module.register_forward_hook(self._after, with_kwargs=True)
            self._module = module
        if device is not None or dtype is not None:
            self._module.to(device=device, dtype=dtype)
        return self._module

    def checkpoint_names(self) -> dict[str, str]:
        """Module state-dict name → the name a checkpoint file holds it under, where they differ.

        ``transformers`` 5 renames some architectures' modules when it loads a checkpoint (ViT's
        ``encoder.layer.N.attention.attention.query`` is ``layers.N.attention.q_proj`` in the module) and
        renames them back when it saves; merges work on the files' names, so the task translates.
        """
        if self._saved is None:
            self._saved = _saved_names(self.module())
        return self._saved

    def module_names(self) -> dict[str, str]:
        """Checkpoint name → module state-dict name, where they differ."""
        return {v: k for k, v in self.checkpoint_names().items()}

    def _before(self, _module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        inputs = args[0] if args else kwargs["input_ids"]
        self._call.value = (self.adapter, inputs)
        return (), self.adapter.model_kwargs(inputs)

    def _after(self, module: nn.Module, _args: tuple, kwargs: dict, output: Any) -> Any:
        adapter, inputs = self._call.value
        return adapter.model_output(module, inputs, kwargs, output)


class HFTask:
    """The network side of a Hugging Face task: config, head check, tokenizer, shared module, batches.

    ``model``: a model folder (``config.json``) or a ``PretrainedConfig``; ``tokenizer``: a folder, a
    tokenizer object, or None for the model folder's (tasks that need none never load it);
    ``shared``: a dict shared by a suite's tasks (one ``Network`` per model); ``settings``: the task's
    parameters (a part of its fingerprint); ``description``: a line for the task's tooltip.
    """

    auto_class = ""
    heads: tuple[str, ...] = ()  # class-name endings of models with the head this task needs
    head_text = ""
    needs_tokenizer = True
    classes: tuple[str, ...] = ()

    def __init__(self, model: str | Path | Any, tokenizer: Any = None, *, name: str | None = None,
                 expert: str | Path | None = None, dtype: str = "fp32", memory_mb: int = 0,
                 shared: dict | None = None, settings: Mapping[str, Any] | None = None, description: str = ""):
        transformers = transformers_module()
        self.description = description
        self.folder: Path | None = None
        if isinstance(model, (str, Path)):
            folder = Path(model).expanduser()
            if not (folder / "config.json").is_file():
                raise EngineInputError("not a Hugging Face model folder (no config.json)", path=str(folder))
            try:
                config = transformers.AutoConfig.from_pretrained(str(folder))
            except (OSError, ValueError, KeyError) as exc:
                raise EngineInputError(f"cannot read the model's config.json ({exc})", path=str(folder)) from exc
            self.folder = folder
            identity = file_identity(folder / "config.json")
            default_name = folder.name
        else:
            config = model
            identity = _blake(config.to_json_string())
            default_name = config.model_type
        self.config = config
        self.name = name or default_name
        self._check_head()
        if dtype not in DTYPES:
            raise EngineInputError(f"unknown dtype '{dtype}' (use {', '.join(DTYPES)})")
        self.dtype, self.memory_mb = dtype, int(memory_mb)
        key = ("network", identity, self.auto_class)
        shared = shared if shared is not None else {}
        if key not in shared:
            shared[key] = Network(config, self.auto_class)
        self.network: Network = shared[key]
        self.tokenizer = self._load_tokenizer(tokenizer) if self.needs_tokenizer else None
        self.expert = Path(expert) if expert else None
        self.settings = json.dumps(settings or {}, sort_keys=True, default=str)
        self._identity = identity
        source = tokenizer if isinstance(tokenizer, (str, Path)) else self.folder if self.needs_tokenizer else None
        self._tokenizer_identity = _tokenizer_identity(Path(source)) if source is not None else ""
        self._data: dict[str, Split] = {}
        self._notes: dict[str, list[str]] = {}
        self._run_notes: list[str] = []

    # the model -----------------------------------------------------------------------------------
    def _check_head(self) -> None:
        architectures = list(getattr(self.config, "architectures", None) or [])
        if self.heads and architectures and not any(a.endswith(self.heads) for a in architectures):
            raise EngineInputError(f"{self._where()} needs {self.head_text}, but the model is a "
                                   f"{', '.join(architectures)} (its config.json names no such head)",
                                   path=str(self.folder / "config.json") if self.folder else None)

    def _where(self) -> str:
        return f"task '{self.name}'"

    def _load_tokenizer(self, tokenizer: Any) -> Any:
        source = tokenizer if tokenizer is not None else self.folder
        if source is None:
            raise EngineInputError(f"{self._where()}: a model given as a config needs a tokenizer")
        if not isinstance(source, (str, Path)):
            return source
        path = Path(source)
        if not path.is_dir():
            raise EngineInputError(f"{self._where()}: the tokenizer folder is missing", path=str(path))
        advice = "declare 'tokenizer' (a folder with the tokenizer files, such as the base model's folder)"
        if not any((path / f).is_file() for f in TOKENIZER_FILES):
            raise EngineInputError(f"{self._where()}: cannot load a tokenizer from this folder: it holds none of "
                                   f"{', '.join(TOKENIZER_FILES)}; {advice}", path=str(path))
        try:
            tok = transformers_module().AutoTokenizer.from_pretrained(str(path))
        except Exception as exc:  # transformers raises many types for broken tokenizer files
            detail = " ".join(str(exc).split())
            raise EngineInputError(f"{self._where()}: cannot load a tokenizer from this folder ({type(exc).__name__}: "
                                   f"{detail[:300]}); {advice}", path=str(path)) from exc
        if isinstance(tok, bool) or not callable(tok):
            raise EngineInputError(f"{self._where()}: the folder holds no tokenizer; declare 'tokenizer'",
                                   path=str(path))
        return tok

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        return int(pad if pad is not None else 0)

    def context_length(self) -> int | None:
        """The longest input the model takes, in tokens (from its config), or None when it says none."""
        for config in (self.config, getattr(self.config, "text_config", None)):
            for key in CONTEXT_KEYS:
                value = getattr(config, key, None) if config is not None else None
                if isinstance(value, int) and value > 0:
                    return value
        return None

    def _torch_dtype(self, device: torch.device) -> torch.dtype:
        if self.dtype != "fp32" and torch.device(device).type != "cuda":
            note = f"dtype {self.dtype} applies on a CUDA device only; scored in fp32 on {torch.device(device).type}"
            if note not in self._run_notes:
                self._run_notes.append(note)
            return torch.float32
        return DTYPES[self.dtype]

    def module(self, device: torch.device | str = "cpu") -> nn.Module:
        """The shared network in this task's dtype on ``device``, answering as this task."""
        self.network.adapter = self
        return self.network.module(device, self._torch_dtype(torch.device(device)))

    def _aliases(self) -> dict[str, set[str]]:
        """Each parameter name → every name sharing its tensor (tied weights)."""
        groups: dict[int, set[str]] = {}
        for n, p in self.network.module().named_parameters(remove_duplicate=False):
            groups.setdefault(id(p), set()).add(n)
        return {n: names for names in groups.values() for n in names}

    def expected_names(self) -> list[str]:
        """The tensors a checkpoint must provide (one name per tied group), named as in a checkpoint file."""
        seen: set[str] = set()
        out = []
        aliases = self._aliases()
        saved = self.network.checkpoint_names()
        for n in self.network.module().state_dict():
            if n not in seen:
                out.append(saved.get(n, n))
                seen |= aliases.get(n, {n})
        return out

    def _module_names(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``state_dict`` with checkpoint names turned into the module's (module names pass unchanged)."""
        to_module = self.network.module_names()
        return {to_module.get(k, k): v for k, v in state_dict.items()}

    def build_model(self, state_dict: Mapping[str, torch.Tensor], device: torch.device | str = "cpu") -> nn.Module:
        """The network with ``state_dict``'s tensors copied in, on ``device``, in eval mode."""
        module = self.module(device)
        state = self._module_names(state_dict)
        missing, unexpected = module.load_state_dict(state, strict=False)
        aliases = self._aliases()
        missing = [n for n in missing if not (aliases.get(n, {n}) - {n}) & set(state)]
        if missing or unexpected:
            saved = self.network.checkpoint_names()
            problem = (f"lacks {len(missing)} tensor(s) such as '{saved.get(missing[0], missing[0])}'" if missing
                       else f"has {len(unexpected)} tensor(s) it does not know, such as '{unexpected[0]}'")
            raise EngineInputError(f"the model does not fit task '{self.name}' "
                                   f"({self.config.model_type}): it {problem}")
        return module.eval()

    def forward(self, params: Mapping[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        """The task's outputs for ``inputs`` with the network's tensors taken from ``params``."""
        module = self.module(inputs.device)
        return torch.func.functional_call(module, self._module_names(params), (inputs,), strict=False,
                                          tie_weights=True)

    def model_kwargs(self, inputs: torch.Tensor) -> dict[str, Any]:
        """The model's keyword arguments for one batch of this task's inputs (token ids by default)."""
        return {"input_ids": inputs, "attention_mask": (inputs != self.pad_id).long()}

    def model_output(self, module: nn.Module, inputs: torch.Tensor, kwargs: dict, output: Any) -> torch.Tensor:
        """What calling the module returns for this task (the logits by default)."""
        return output.logits

    def example_bytes(self) -> int:
        """Estimated working memory of one example in a forward pass (for the batch size)."""
        hidden = int(getattr(self.config, "hidden_size", 0) or 768)
        return self.longest_input() * hidden * 4 * 32

    def longest_input(self) -> int:
        """The last dimension of the longest loaded input tensor (512 before any data is loaded)."""
        return max((int(s.inputs.shape[-1]) for s in self._data.values()), default=512)

    def max_batch_size(self, device: torch.device | str) -> int:
        """Examples per batch that fit the memory budget on ``device``."""
        device = torch.device(device)
        if self.memory_mb > 0:
            budget = self.memory_mb * 2 ** 20
        elif device.type == "cuda":
            budget = torch.cuda.mem_get_info(device)[0] // 2
        else:
            budget = CPU_BUDGET_MB * 2 ** 20
        return max(1, budget // max(1, self.example_bytes()))

    def fingerprint(self) -> str:
        return _blake(f"{self.name}|{type(self).__name__}|{self._identity}|{self._tokenizer_identity}|"
                      f"{self.settings}|{self.dtype}|{self._data_identity()}")

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
                notes: list[str] = []
                self._data[split] = self._load(files[split], notes)
                self._notes[split] = notes
            else:
                raise EngineInputError(f"task '{self.name}' has no '{split}' split (it has {', '.join(self.splits)})")
        return self._data[split]

    def notes(self, split: str) -> list[str]:
        """What a result on ``split`` should say about the data and the run (cut texts, dtype fallback)."""
        self.data(split)
        return [*self._notes.get(split, []), *self._run_notes]

    def _files(self) -> dict[str, Path]:
        raise NotImplementedError

    def _load(self, path: Path, notes: list[str]) -> Split:
        raise NotImplementedError

    def _data_identity(self) -> str:
        return "|".join(f"{k}={file_identity(p)}" for k, p in self._files().items())


class HFSequenceClassificationTask(HFTask):
    """Accuracy of a sequence-classification model on a labelled CSV/JSONL file (see the module doc).

    ``model``: a model folder or a ``PretrainedConfig``; ``data_file``: the test split;
    ``splits``: further labelled files by split name.
    """

    auto_class = "AutoModelForSequenceClassification"
    heads = ("ForSequenceClassification",)
    head_text = "a sequence-classification model (…ForSequenceClassification)"

    def __init__(self, model: str | Path | Any, data_file: str | Path, tokenizer: Any = None, *,
                 splits: Mapping[str, str | Path] | None = None, text_column: str = "text",
                 label_column: str = "label", max_length: int = 128, name: str | None = None,
                 expert: str | Path | None = None, **options: Any):
        super().__init__(model, tokenizer, name=name, expert=expert, **options,
                         settings={"text": text_column, "label": label_column, "max_length": max_length})
        self.files = {"test": Path(data_file).expanduser(),
                      **{k: Path(v).expanduser() for k, v in (splits or {}).items()}}
        self.text_column, self.label_column, self.max_length = text_column, label_column, int(max_length)
        if self.config.pad_token_id is None:  # decoder classifiers find the last token through the pad id
            self.config.pad_token_id = self.pad_id
        labels = self.config.id2label
        self.classes = tuple(str(labels[i]) for i in range(self.config.num_labels))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _files(self) -> dict[str, Path]:
        return self.files

    def _load(self, path: Path, notes: list[str]) -> Split:
        rows = labelled_rows(path, self.text_column, self.label_column)
        labels = [label_index(label, self.classes, f"line {line}", path) for line, _, label in rows]
        limit = self.max_length
        context = self.context_length()
        if context is not None and limit > context:
            notes.append(f"max_length {limit} is longer than the model's context; texts are cut to {context} tokens")
            limit = context
        ids = self.tokenizer([text for _, text, _ in rows], verbose=False)["input_ids"]
        cut = [line for (line, _, _), seq in zip(rows, ids) if len(seq) > limit]
        if cut:
            ids = self.tokenizer([text for _, text, _ in rows], truncation=True, max_length=limit)["input_ids"]
            notes.append(f"{path}: {len(cut)} text(s) longer than {limit} tokens were cut (line {cut[0]}"
                         f"{' and others' if len(cut) > 1 else ''})")
        width = max(len(seq) for seq in ids)
        batch = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        for i, seq in enumerate(ids):
            batch[i, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        return Split(batch, torch.tensor(labels, dtype=torch.long))


# ---------------------------------------------------------------- declared kinds: shared parameters

HF_PARAMS = (
    TaskParam("model", "path", None, "the Hugging Face model folder whose config.json builds the network "
                                     "(default: the suite's base)"),
    TaskParam("tokenizer", "path", None, "a folder with the tokenizer (default: the model folder)"),
    TaskParam("expert", "path", None, "the task's own fine-tuned model: the reference of normalized scores"),
    TaskParam("dtype", "choice", "fp32", "compute precision; fp16 and bf16 apply on a CUDA device",
              choices=tuple(DTYPES)),
    TaskParam("memory_mb", "int", 0, "memory budget of one batch in MiB (0: half the free GPU memory, 1 GiB on "
                                     "the CPU)", min=0, max=10 ** 7),
)


def model_folder(entry: TaskEntry) -> Path:
    """The entry's ``model``, else the suite's ``base``; an error naming the manifest when neither is given."""
    if entry.values.get("model") is not None:
        return entry.values["model"]
    base = entry.suite.get("base")
    if not isinstance(base, str) or not base:
        raise entry.error("names no model: give 'model' (a Hugging Face model folder) or the suite's 'base'")
    return (entry.folder / base).resolve()


def hf_options(entry: TaskEntry) -> dict[str, Any]:
    """The keyword arguments every HFTask takes, from an entry's shared parameters."""
    v = entry.values
    return {"name": entry.name, "tokenizer": v.get("tokenizer"), "expert": v.get("expert"), "dtype": v["dtype"],
            "memory_mb": v["memory_mb"], "shared": entry.shared, "description": entry.description}


def _build_text_classification(entry: TaskEntry) -> list[HFSequenceClassificationTask]:
    files = dict(entry.values["data"])
    test = files.pop("test", None)
    if test is None:
        raise entry.error("'data' needs a 'test' file")
    return [HFSequenceClassificationTask(model_folder(entry), test, splits=files,
                                         text_column=entry.values["text_field"],
                                         label_column=entry.values["label_field"],
                                         max_length=entry.values["max_length"], **hf_options(entry))]


TEXT_CLASSIFICATION = register_task_kind(TaskKind(
    "text-classification", "Text classification",
    "Accuracy of a sequence-classification model on labelled texts.",
    params=(
        TaskParam("data", "path", None, "a .csv (header row) or .jsonl file of texts and labels, or "
                                        "{\"test\": …, \"val\": …}", required=True, per_split=True),
        TaskParam("text_field", "str", "text", "the column holding the text"),
        TaskParam("label_field", "str", "label", "the column holding the label (class index or name)"),
        TaskParam("max_length", "int", 128, "tokens per text; longer texts are cut", min=1, max=1_000_000),
        *HF_PARAMS,
    ),
    build=_build_text_classification,
    data="CSV or JSONL: one text and one label per row",
    model="a …ForSequenceClassification model folder (config.json, weights, tokenizer)",
    metrics=("accuracy", "loss", "entropy"),
))
