"""Adding tasks from data files: which task a file makes with a model, and what its reader finds in it.

``detect_task(path, model_folder)`` looks at the head of a data file (or a folder's listing) and at the
model folder's ``config.json`` — never at the weights — and returns a task entry for a suite manifest
or an Evaluate node's ``task_entries``:

- a text file (``.txt``, ``.md``, ``.rst``, ``.py``…) or a folder of ``.txt`` files → ``text-perplexity``;
- JSONL rows with ``choices`` → ``multiple-choice``;
- JSONL rows with a prompt (``prompt``, ``question``, ``input``, ``instruction``) and a reference
  (``reference``, ``answer``, ``target``, ``completion``, ``output``) → ``generation``;
- CSV or JSONL rows with a text (``text``, ``sentence``, ``review``, ``content``) and a label (``label``,
  ``class``, ``category``) → ``text-classification``;
- a folder of class folders of images, or a CSV of image paths and labels → ``image-classification``.

The model decides whether the data fits: a ``…ForCausalLM`` (or ``…LMHeadModel``) takes the three
causal-LM kinds, a ``…ForSequenceClassification`` text classification, an ``…ForImageClassification``
or a CLIP model (zero-shot) images. The entry gets a name from the file (unique among ``taken``), the
fields it found, and defaults that fit the model (blocks and lengths within its context; for an image
model without an image processor, its image size and normalisation). Anything else is an
``EngineInputError`` naming the file.

``preview_task(entry, folder, n)`` gives the first ``n`` examples of an entry's test data as its kind's
reader parses them (``{"file", "line", …fields}``), with the reader's checks and messages naming file
and line; ``entry_problems(entries, folder)`` is what validation reports about an Evaluate node's
inline entries (the entries' schema, their models' ``config.json``, the head of each data file; cached
while the files are unchanged).
"""

from __future__ import annotations

import json
import re
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from engine.errors import EngineInputError
from engine.evaluation.data_files import csv_rows, jsonl_rows, label_index, table_rows, text_files, text_lines
from engine.evaluation.hf import CONTEXT_KEYS, TOKENIZER_FILES, model_folder as entry_model
from engine.evaluation.image_tasks import IMAGE_SUFFIXES, image_examples
from engine.evaluation.suite import inline_entries, inline_messages
from engine.evaluation.task_kinds import TaskEntry, task_kind

TEXT_SUFFIXES = (".txt", ".text", ".md", ".markdown", ".rst", ".py")
PROMPT_FIELDS = ("prompt", "question", "input", "instruction")
REFERENCE_FIELDS = ("reference", "answer", "target", "completion", "output")
QUESTION_FIELDS = ("question", "context", "prompt", "query")
ANSWER_FIELDS = ("answer", "label", "gold")
TEXT_FIELDS = ("text", "sentence", "review", "content")
LABEL_FIELDS = ("label", "class", "category")
IMAGE_FIELDS = ("path", "image", "file", "filename")
CLIP_MEAN, CLIP_STD = [0.4815, 0.4578, 0.4082], [0.2686, 0.2613, 0.2758]
CHECK_ROWS = 20  # examples validation reads from the head of each data file

CAUSAL_LM, SEQUENCE_CLASSIFIER, IMAGE_CLASSIFIER, CLIP = "causal-lm", "sequence-classifier", "image-classifier", "clip"
FAMILY_TEXT = {CAUSAL_LM: "a causal language model (…ForCausalLM)",
               SEQUENCE_CLASSIFIER: "a sequence classifier (…ForSequenceClassification)",
               IMAGE_CLASSIFIER: "an image classifier (…ForImageClassification)", CLIP: "a CLIP model"}
# data shape → (the task kind for each model family that can score it, what the data is, in words)
KINDS: dict[str, tuple[dict[str, str], str]] = {
    "text": ({CAUSAL_LM: "text-perplexity"}, "plain text (perplexity)"),
    "choice": ({CAUSAL_LM: "multiple-choice"}, "multiple-choice questions"),
    "generation": ({CAUSAL_LM: "generation"}, "prompts with reference answers (generation)"),
    "labelled": ({SEQUENCE_CLASSIFIER: "text-classification"}, "labelled texts (text classification)"),
    "images": ({IMAGE_CLASSIFIER: "image-classification", CLIP: "image-classification"}, "labelled images"),
}


# ---------------------------------------------------------------- the model


def _model_config(folder: Path) -> dict[str, Any]:
    """The model folder's ``config.json`` as a dict (an error naming the file when it is missing or bad)."""
    config = folder / "config.json"
    if not folder.exists():
        raise EngineInputError("model folder not found", path=str(folder))
    if not config.is_file():
        raise EngineInputError("not a Hugging Face model folder (no config.json): tasks need the model's config "
                               "and tokenizer", path=str(folder))
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise EngineInputError(f"cannot read the model's config.json ({exc})", path=str(config)) from None
    if not isinstance(data, dict):
        raise EngineInputError("the model's config.json is not a JSON object", path=str(config))
    return data


def model_family(config: Mapping[str, Any]) -> str | None:
    """Which kind of model a ``config.json`` describes (``causal-lm``, ``sequence-classifier``,
    ``image-classifier``, ``clip``), or None when it is none of them."""
    archs = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    if config.get("model_type") == "clip" or any(a.startswith("CLIP") for a in archs):
        return CLIP
    for suffixes, family in ((("ForCausalLM", "LMHeadModel"), CAUSAL_LM),
                             (("ForSequenceClassification",), SEQUENCE_CLASSIFIER),
                             (("ForImageClassification",), IMAGE_CLASSIFIER)):
        if any(a.endswith(suffixes) for a in archs):
            return family
    return None


def _context(config: Mapping[str, Any]) -> int | None:
    for block in (config, config.get("text_config")):
        for key in CONTEXT_KEYS if isinstance(block, Mapping) else ():
            value = block.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


# ---------------------------------------------------------------- the data


def _first(fields: Iterable[str], candidates: Sequence[str]) -> str | None:
    present = set(fields)
    return next((c for c in candidates if c in present), None)


def _data_shape(path: Path) -> tuple[str, Mapping[str, Any], dict[str, Any]]:
    """(shape, the first row of table data, the fields found) of a data file or folder."""
    if path.is_dir():
        for folder in sorted(p for p in path.iterdir() if p.is_dir()):
            if any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in folder.rglob("*")):
                return "images", {}, {}
        if next(path.rglob("*.txt"), None) is not None:
            return "text", {}, {}
        raise EngineInputError("the folder holds neither class folders of images (image classification) nor .txt "
                               "files (perplexity)", path=str(path))
    if not path.is_file():
        raise EngineInputError("data file not found", path=str(path))
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return "text", {}, {}
    if suffix == ".csv":
        line, row = next(csv_rows(path))
        return _row_shape(path, line, row, image_paths=True)
    if suffix in (".jsonl", ".json"):
        line, row = next(jsonl_rows(path))
        return _row_shape(path, line, row, image_paths=False)
    raise EngineInputError(f"cannot tell which task a '{suffix or path.name}' file is: add text (.txt, .md, .py), "
                           "JSON Lines (.jsonl), CSV (.csv) or a folder", path=str(path))


def _row_shape(path: Path, line: int, row: Mapping[str, Any], *,
               image_paths: bool) -> tuple[str, Mapping[str, Any], dict[str, Any]]:
    """The shape of table data from its first row's fields."""
    if "choices" in row:
        question, answer = _first(row, QUESTION_FIELDS), _first(row, ANSWER_FIELDS)
        if question is None or answer is None:
            raise EngineInputError(f"line {line} has choices but no {'question' if question is None else 'answer'} "
                                   f"(it has {', '.join(row)})", path=str(path))
        return "choice", row, {"question": question, "answer": answer}
    prompt, reference = _first(row, PROMPT_FIELDS), _first(row, REFERENCE_FIELDS)
    if prompt is not None and reference is not None:
        return "generation", row, {"prompt": prompt, "reference": reference}
    label = _first(row, LABEL_FIELDS)
    text = _first(row, TEXT_FIELDS)
    if label is not None and text is not None:
        return "labelled", row, {"text": text, "label": label}
    image = _first(row, IMAGE_FIELDS) if image_paths else None
    if label is not None and image is not None:
        return "images", row, {"image": image, "label": label}
    raise EngineInputError(
        f"cannot tell the task from the fields of line {line} ({', '.join(row)}): expected choices (multiple choice), "
        "a prompt and a reference (generation), a text and a label (text classification)"
        f"{' or an image path and a label (images)' if image_paths else ''}", path=str(path))


def _unique_name(path: Path, taken: Iterable[str]) -> str:
    stem = path.name if path.is_dir() else path.stem
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.").lower() or "task"
    used = set(taken)
    name, i = base, 2
    while name in used:
        name, i = f"{base}-{i}", i + 1
    return name


def _written(path: Path, relative_to: Path | None) -> str:
    """``path`` as an entry writes it: relative to ``relative_to`` when it lies inside that folder."""
    path = path.resolve()
    if relative_to is not None:
        try:
            return path.relative_to(relative_to.resolve()).as_posix()
        except ValueError:
            pass
    return str(path)


def detect_task(path: str | Path, model_folder: str | Path, *, relative_to: str | Path | None = None,
                taken: Iterable[str] = ()) -> dict[str, Any]:
    """A task entry for the data at ``path`` scored with the model in ``model_folder`` (a checkpoint file
    stands for its folder); see the module doc for the rules. Paths in the entry are relative to
    ``relative_to`` when they lie inside it (absolute otherwise); the name differs from every one in
    ``taken``. Reads only the head of the data and the model's ``config.json``."""
    data = Path(path).expanduser().resolve()
    model = Path(model_folder).expanduser().resolve()
    model = model.parent if model.is_file() else model
    config = _model_config(model)
    family = model_family(config)
    shape, first, fields = _data_shape(data)
    kinds, what = KINDS[shape]
    if family not in kinds:
        wanted = " or ".join(FAMILY_TEXT[f] for f in kinds)
        have = FAMILY_TEXT.get(family) if family else (
            f"a {', '.join(config.get('architectures') or []) or config.get('model_type', 'model')} (none of "
            "the kinds tasks score)")
        raise EngineInputError(f"{what} need{'s' if shape == 'text' else ''} {wanted}; the model in {model} is {have}",
                               path=str(data))
    needs_tokenizer = family != IMAGE_CLASSIFIER
    if needs_tokenizer and not any((model / f).is_file() for f in TOKENIZER_FILES):
        raise EngineInputError(f"the model folder has no tokenizer files ({', '.join(TOKENIZER_FILES)}); add the "
                               "tokenizer of its base model there", path=str(model))
    where = Path(relative_to).expanduser() if relative_to is not None else None
    entry: dict[str, Any] = {"name": _unique_name(data, taken), "kind": kinds[family], "data": _written(data, where),
                             "model": _written(model, where)}
    entry.update(_defaults(shape, first, fields, config, family, model))
    return entry


def _defaults(shape: str, first: Mapping[str, Any], fields: Mapping[str, Any], config: Mapping[str, Any],
              family: str, model: Path) -> dict[str, Any]:
    """The entry's field names (where not the kind's defaults) and values that fit the model; ``first`` is
    the data's first row (table data)."""
    context = _context(config)
    out: dict[str, Any] = {}
    if shape == "text" and context:
        out["block_size"] = min(512, context)
    elif shape == "choice":
        if fields["question"] not in ("question", "context"):
            out["question_field"] = fields["question"]
        if fields["answer"] != "answer":
            out["answer_field"] = fields["answer"]
        question, choices = first.get(fields["question"]), first.get("choices")
        if (isinstance(question, str) and question and not question[-1].isspace() and isinstance(choices, list)
                and choices and isinstance(choices[0], str) and choices[0] and not choices[0][0].isspace()):
            out["delimiter"] = " "  # "The capital is" + "Paris": a space between, as lm-evaluation-harness does
    elif shape == "generation":
        if fields["prompt"] != "prompt":
            out["prompt_field"] = fields["prompt"]
        if fields["reference"] != "reference":
            out["reference_field"] = fields["reference"]
        if context:
            out["max_new_tokens"] = max(1, min(32, context // 2))
    elif shape == "labelled":
        if fields["text"] != "text":
            out["text_field"] = fields["text"]
        if fields["label"] != "label":
            out["label_field"] = fields["label"]
        if context:
            out["max_length"] = min(128, context)
    elif shape == "images":
        if fields.get("image", "path") != "path":
            out["image_field"] = fields["image"]
        if fields.get("label", "label") != "label":
            out["label_field"] = fields["label"]
        if not (model / "preprocessor_config.json").is_file():
            vision = config.get("vision_config") if family == CLIP else config
            size = vision.get("image_size") if isinstance(vision, Mapping) else None
            if isinstance(size, int) and size > 0:
                out["image_size"] = size
            if family == CLIP:
                out["mean"], out["std"] = CLIP_MEAN, CLIP_STD
    return out


# ---------------------------------------------------------------- previews


def _test_file(entry: TaskEntry) -> Path:
    data = entry.values["data"]
    if "test" not in data:
        raise entry.error("'data' needs a 'test' file")
    return Path(data["test"])


def _text_examples(entry: TaskEntry) -> Iterator[dict[str, Any]]:
    files = text_files(_test_file(entry))
    found = False
    for f in files:
        for line, text in text_lines(f):
            if text.strip():
                found = True
                yield {"file": str(f), "line": line, "text": text.rstrip("\n")}
    if not found:
        raise EngineInputError("the text file is empty", path=str(files[0]))


def _choice_examples(entry: TaskEntry) -> Iterator[dict[str, Any]]:
    path, v = _test_file(entry), entry.values
    question_fields = [v["question_field"]] + (["context"] if v["question_field"] == "question" else [])
    for line, row in jsonl_rows(path):
        field = next((f for f in question_fields if f in row), None)
        if field is None:
            raise EngineInputError(f"line {line} has no '{v['question_field']}' field (it has {', '.join(row)})",
                                   path=str(path))
        if not isinstance(row[field], str):
            raise EngineInputError(f"line {line}: '{field}' must be text", path=str(path))
        choices = row.get(v["choices_field"])
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise EngineInputError(f"line {line}: '{v['choices_field']}' must be a list of texts", path=str(path))
        if len(choices) < 2:
            raise EngineInputError(f"line {line}: a choice list needs at least two entries, it has {len(choices)}",
                                   path=str(path))
        if v["answer_field"] not in row:
            raise EngineInputError(f"line {line} has no '{v['answer_field']}' field (it has {', '.join(row)})",
                                   path=str(path))
        answer = row[v["answer_field"]]
        if isinstance(answer, int) and not isinstance(answer, bool):
            if not 0 <= answer < len(choices):
                raise EngineInputError(f"line {line}: answer index {answer} is outside 0…{len(choices) - 1} "
                                       f"({len(choices)} choices)", path=str(path))
            answer = choices[answer]
        elif not (isinstance(answer, str) and answer in choices):
            raise EngineInputError(f"line {line}: answer {answer!r} is neither a choice index nor one of the choices",
                                   path=str(path))
        yield {"file": str(path), "line": line, "question": row[field], "choices": choices, "answer": answer}


def _generation_examples(entry: TaskEntry) -> Iterator[dict[str, Any]]:
    path, v = _test_file(entry), entry.values
    for line, row in jsonl_rows(path):
        prompt = row.get(v["prompt_field"])
        if not isinstance(prompt, str):
            raise EngineInputError(f"line {line} has no '{v['prompt_field']}' text (it has {', '.join(row)})",
                                   path=str(path))
        if v["reference_field"] not in row:
            raise EngineInputError(f"line {line} has no '{v['reference_field']}' field (it has {', '.join(row)})",
                                   path=str(path))
        refs = row[v["reference_field"]]
        refs = [refs] if isinstance(refs, str) else refs
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
            raise EngineInputError(f"line {line}: '{v['reference_field']}' must be a text or a non-empty list of "
                                   "texts", path=str(path))
        if v["match"] == "regex":
            for r in refs:
                try:
                    re.compile(r)
                except re.error as exc:
                    raise EngineInputError(f"line {line}: reference {r!r} is not a valid regular expression ({exc})",
                                           path=str(path)) from None
        yield {"file": str(path), "line": line, "prompt": prompt, "reference": refs if len(refs) > 1 else refs[0]}


def _model_classes(entry: TaskEntry) -> tuple[str, ...]:
    """A classifier's class names from its ``config.json`` (empty when they cannot be read cheaply)."""
    try:
        config = _model_config(entry_model(entry))
    except EngineInputError:
        return ()
    labels = config.get("id2label")
    if model_family(config) == CLIP or not isinstance(labels, Mapping):
        return ()
    try:
        return tuple(str(labels[k]) for k in sorted(labels, key=int))
    except (TypeError, ValueError):
        return ()


def _labelled_examples(entry: TaskEntry) -> Iterator[dict[str, Any]]:
    path, v = _test_file(entry), entry.values
    classes = _model_classes(entry)
    for line, row in table_rows(path, (v["text_field"], v["label_field"])):
        text, label = row.get(v["text_field"]), row.get(v["label_field"])
        if not isinstance(text, str) or label in (None, ""):
            raise EngineInputError(f"line {line} lacks a text or a label", path=str(path))
        if classes:
            label = classes[label_index(label, classes, f"line {line}", path)]
        yield {"file": str(path), "line": line, "text": text, "label": label}


def _image_examples(entry: TaskEntry) -> Iterator[dict[str, Any]]:
    path, v = _test_file(entry), entry.values
    classes = _model_classes(entry)
    for image, label, where in image_examples(path, v["image_field"], v["label_field"]):
        if classes:
            label = classes[label_index(label, classes, where, path)]
        if not image.is_file():
            raise EngineInputError(f"{where}: image not found", path=str(image))
        yield {"file": str(image), "line": None, "label": label}


PREVIEWS: dict[str, Callable[[TaskEntry], Iterator[dict[str, Any]]]] = {
    "text-perplexity": _text_examples, "multiple-choice": _choice_examples, "generation": _generation_examples,
    "text-classification": _labelled_examples, "image-classification": _image_examples,
}


def preview_examples(entry: TaskEntry, n: int = 3) -> list[dict[str, Any]]:
    """The first ``n`` examples of a resolved entry's test data as its reader parses them; a kind whose
    data only its own code reads (a plugin, the zoo's) gives none. Problems raise EngineInputError naming
    the file and line."""
    reader = PREVIEWS.get(entry.kind)
    return list(islice(reader(entry), n)) if reader is not None else []


def preview_task(entry: Mapping[str, Any], folder: str | Path, n: int = 3) -> list[dict[str, Any]]:
    """The first ``n`` examples of a task entry (paths relative to ``folder``), each ``{"file", "line",
    …}`` with the fields its kind reads (text; question, choices, answer; prompt, reference; text,
    label; label of an image file). A bad entry or data raises EngineInputError naming file and line."""
    [resolved] = inline_entries([dict(entry)], folder)
    with inline_messages(folder):
        return preview_examples(resolved, n)


# ---------------------------------------------------------------- validation


def _stamp(path: Path) -> tuple:
    """What changes when a data file or folder (or its direct contents) changes."""
    try:
        stat = path.stat()
        children = tuple((p.name, p.stat().st_mtime_ns) for p in sorted(path.iterdir())) if path.is_dir() else ()
    except OSError:  # missing, or changing while it is looked at: checked afresh
        return (str(path), None, object())
    return (str(path), stat.st_mtime_ns, stat.st_size, children)


_checked: dict[tuple, str | None] = {}
_CHECKED_MAX = 512


def _entry_problem(entry: TaskEntry) -> str | None:
    """The first problem of one resolved entry: its model's config, then the head of its data."""
    try:
        with inline_messages(entry.folder):
            if "model" in entry.values:
                model = entry_model(entry)
                if model_family(_model_config(model)) is None:
                    raise EngineInputError("config.json names no architecture tasks can score (…ForCausalLM, "
                                           "…ForSequenceClassification, …ForImageClassification, CLIP)",
                                           path=str(model))
            preview_examples(entry, CHECK_ROWS)
    except EngineInputError as exc:
        message = str(exc)
        return message if message.startswith(entry.where()) else f"{entry.where()}: {message}"
    return None


def entry_problems(entries: Sequence[Any], folder: Path) -> list[str]:
    """Every problem of an Evaluate node's inline task entries (paths relative to ``folder``): the first
    schema error, names used twice, then for each entry its model's ``config.json`` and the head of its
    data. Reads no weights; results are kept while the files are unchanged."""
    try:
        resolved = inline_entries(entries, folder)
    except EngineInputError as exc:
        return [str(exc)]
    names = [e.name for e in resolved if e.name]
    problems = [f"two task entries are named '{n}'" for n in sorted({n for n in names if names.count(n) > 1})]
    for entry in resolved:
        files = [v for value in entry.values.values() for v in _paths(value)]
        key = (entry.kind, json.dumps(entry.values, sort_keys=True, default=str), tuple(_stamp(p) for p in files))
        if key not in _checked:
            if len(_checked) >= _CHECKED_MAX:
                _checked.clear()
            _checked[key] = _entry_problem(entry)
        if _checked[key]:
            problems.append(_checked[key])
    return problems


def entry_path_keys(entry: Mapping[str, Any]) -> list[str]:
    """The fields of a raw task entry that hold file paths: its kind's ``path`` parameters (none for an
    unknown kind, which validation reports)."""
    try:
        kind = task_kind(str(entry.get("kind", "")))
    except EngineInputError:
        return []
    return [p.name for p in kind.params if p.type == "path"]


class InlineEntrySupport:
    """What the graph's Evaluate kind asks about inline task entries: their problems and path fields."""

    problems = staticmethod(entry_problems)
    path_keys = staticmethod(entry_path_keys)


def _paths(value: Any) -> list[Path]:
    """The paths a resolved parameter value holds (a path, or a split → path map)."""
    if isinstance(value, Path):
        return [value] + ([value / "config.json"] if value.is_dir() else [])
    if isinstance(value, Mapping):
        return [p for v in value.values() for p in _paths(v)]
    return []
