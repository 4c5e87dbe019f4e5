"""Vocabulary growth: merging models whose embedding / LM-head rows differ, row by token, not by index.

A chat fine-tune that added tokens (``embed_tokens`` 4098 rows against the base's 4096) still shares
every other tensor's shape with its base. Such models are merged by aligning the rows of their
*vocabulary tensors* (embeddings, LM heads, their biases: ``VOCAB_NAME`` and "differs only in dim 0")
through each model folder's tokenizer: output row ``j`` holds token ``t``; model ``m`` contributes its
row ``vocab_m[t]``. One index map per model is computed once (``plan_vocabulary``); each vocabulary
tensor is then re-indexed on its own while the run streams (``VocabAlignment``: one tensor at a time).

Conventions follow mergekit (arcee-ai/mergekit ``mergekit/tokenizer/build.py`` and ``embed.py``):

- The output vocabulary is one model's tokenizer (``tokenizer_source``: the base by default, or a
  named model) or the *union*: the base tokenizer with every other model's tokens it lacks appended as
  added tokens, regular tokens first then added tokens, in model order (added tokens keep their
  special / strip / normalised settings).
- A model that lacks a token gets a stand-in row before the merge: the base's row when the base has
  the token, else the mean of the rows of the models that have it (one model: its row). A merge of
  rows that all equal one model's row gives that row, so a token only one expert has keeps that
  expert's row under task arithmetic or a linear merge; for other methods the stand-in is what the
  method sees. A token no model holds (a tokenizer entry past its model's rows) gets a zero row.
- Tokens whose id is at or past a model's row count are absent from that model (mergekit's "stripped"
  tokenizer). Rows without a token (padding rows past the tokenizer's length) are aligned by index
  among the models whose row there is also tokenless.

Own choices (differences from mergekit): the union keeps the base's padding rows (output rows =
max(union size, base rows)); a single model's tokenizer keeps that model's row count; a model folder
without tokenizer files is taken to share the base's vocabulary only when its row count equals the
base's (else refused by name); a union of tokenizers of different kinds (model type, normaliser or
pre-tokeniser differ, e.g. BPE and WordPiece) is refused naming both files.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping


from engine.checkpoints.base import Checkpoint, TensorInfo
from engine.errors import EngineInputError

if TYPE_CHECKING:  # torch is imported where rows are aligned: comparing vocabularies needs none
    import torch

VOCAB_NAME = re.compile(r"(?:^|\.)(?:embed_tokens|lm_head|wte|word_embeddings|tok_embeddings|embed_in|embed_out|"
                        r"shared|output_embeddings)\.(?:weight|bias)$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "vocab.txt", "merges.txt", "added_tokens.json", "chat_template.jinja")
_VOCAB_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")  # files that define tokens
UNION = "union"


def folder_of(ckpt: Checkpoint) -> Path:
    """The model folder holding a checkpoint's config and tokenizer files."""
    path = Path(ckpt.path)
    return path if path.is_dir() else path.parent


def is_vocab_difference(name: str, a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """True when tensor ``name`` is a vocabulary tensor whose two shapes differ only in rows (dim 0)."""
    return bool(VOCAB_NAME.search(name)) and len(a) == len(b) >= 1 and a[1:] == b[1:] and a[0] != b[0]


def vocab_rows(ckpt: Checkpoint) -> int | None:
    """The row count of a checkpoint's first 2-D vocabulary tensor (its embedding), or None."""
    for name in ckpt.names:
        if VOCAB_NAME.search(name) and len(ckpt.info(name).shape) == 2:
            return ckpt.info(name).shape[0]
    return None


def vocab_tensors(ckpt: Checkpoint, rows: int) -> list[str]:
    """The names of a checkpoint's vocabulary tensors: name pattern and ``rows`` rows along dim 0."""
    return [n for n in ckpt.names if VOCAB_NAME.search(n) and ckpt.info(n).shape[:1] == (rows,)]


@dataclass(frozen=True)
class Vocabulary:
    """One model folder's tokenizer: token → id (added tokens included), its added tokens' settings,
    the file it was read from and what kind of tokenizer it is (model type, normaliser, pre-tokeniser)."""

    folder: Path
    file: Path
    tokens: dict[str, int]
    added: dict[str, dict[str, Any]]
    kind: str
    signature: str

    def token_ids(self, rows: int) -> dict[str, int]:
        """The tokens whose ids have a row among ``rows`` (a tokenizer may name ids past its model's rows)."""
        return {t: i for t, i in self.tokens.items() if i < rows}


_CACHE: dict[tuple[str, int, int], Vocabulary] = {}
_CACHE_LOCK = threading.Lock()


def read_vocabulary(folder: Path) -> Vocabulary | None:
    """The tokenizer of a model folder (None when it holds no tokenizer files). ``tokenizer.json`` is
    read with the ``tokenizers`` library; other formats (``tokenizer.model``, ``vocab.txt``…) through
    ``transformers.AutoTokenizer``. Unreadable files are an input error naming the file."""
    folder = Path(folder)
    tj = folder / "tokenizer.json"
    source = tj if tj.is_file() else next((folder / f for f in _VOCAB_FILES if (folder / f).is_file()), None)
    if source is None:
        return None
    stat = source.stat()
    key = (str(source.resolve()), stat.st_mtime_ns, stat.st_size)
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
    try:
        text = tj.read_text(encoding="utf-8") if source == tj else _fast_tokenizer_json(folder)
        data = json.loads(text)
        from tokenizers import Tokenizer

        tokens = Tokenizer.from_str(text).get_vocab(with_added_tokens=True)
    except EngineInputError:
        raise
    except Exception as exc:  # malformed JSON, a tokenizer the libraries cannot read
        raise EngineInputError(f"cannot read the tokenizer ({exc})", path=str(source)) from exc
    model = data.get("model") or {}
    kind = str(model.get("type") or "unknown")
    signature = json.dumps([kind, data.get("normalizer"), data.get("pre_tokenizer")], sort_keys=True)
    added = {a["content"]: {k: a[k] for k in ("single_word", "lstrip", "rstrip", "normalized", "special") if k in a}
             for a in data.get("added_tokens") or [] if isinstance(a, dict) and "content" in a}
    vocab = Vocabulary(folder, source, tokens, added, kind, signature)
    with _CACHE_LOCK:
        _CACHE[key] = vocab
    return vocab


def _fast_tokenizer_json(folder: Path) -> str:
    """The ``tokenizer.json`` text of a folder that holds another tokenizer format (converted to fast)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder), use_fast=True)
    backend = getattr(tok, "backend_tokenizer", None) or getattr(tok, "_tokenizer", None)
    if backend is None:
        raise EngineInputError("the tokenizer has no fast form to read its vocabulary from", path=str(folder))
    return backend.to_str()


def describe_kind(v: Vocabulary) -> str:
    """``BPE (normaliser: NFC, pre-tokeniser: ByteLevel)`` for messages."""
    _, normalizer, pre = json.loads(v.signature)
    return (f"{v.kind} (normaliser: {(normalizer or {}).get('type', 'none')}, "
            f"pre-tokeniser: {(pre or {}).get('type', 'none')})")


def added_tokens(reference: Checkpoint, other: Checkpoint) -> tuple[int, int] | None:
    """(tokens ``other`` has that ``reference`` lacks, and the reverse), by their tokenizers' vocabularies
    within each model's rows; None when either folder has no tokenizer files."""
    a, b = read_vocabulary(folder_of(reference)), read_vocabulary(folder_of(other))
    if a is None or b is None:
        return None
    ta = a.token_ids(vocab_rows(reference) or len(a.tokens))
    tb = b.token_ids(vocab_rows(other) or len(b.tokens))
    return sum(t not in ta for t in tb), sum(t not in tb for t in ta)


@dataclass
class VocabPlan:
    """How the run's vocabulary tensors are re-indexed: ``maps[node]`` gives, for each output row, the
    row of that node's tensor holding the same token (-1 where it lacks it); ``base`` is the node whose
    row stands in for a token another model lacks (when it has it). ``source`` is ``union`` or the node
    whose tokenizer the output keeps; ``sizes[node]`` its own row count; ``identity``: every model has the
    output's rows in the output's order (nothing to re-index)."""

    source: str
    base: str
    rows: int
    names: frozenset[str]
    maps: dict[str, torch.Tensor]
    sizes: dict[str, int]
    folder: Path
    union: Any = None  # the union tokenizer (transformers) to save, when ``source`` is ``union``
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        import torch

        order = torch.arange(self.rows)
        self._prefix = {nid for nid, m in self.maps.items() if bool((m == order).all())}  # rows kept in place
        self.identity = all(self.sizes[nid] == self.rows and nid in self._prefix for nid in self.maps)

    def align(self, name: str, raw: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every model's tensor ``name`` with its rows in output order; rows a model lacks hold the base's
        row for that token when the base has it, else the mean of the rows of the models that have it."""
        import torch

        out: dict[str, torch.Tensor] = {}
        have: dict[str, torch.Tensor] = {}
        for nid, t in raw.items():
            m = self.maps.get(nid)
            if m is None:
                out[nid] = t
                continue
            # rows it lacks are gathered from row 0 here and overwritten by their stand-ins below
            out[nid] = t[: self.rows] if nid in self._prefix else t.index_select(0, m.clamp(min=0))
            have[nid] = m >= 0
        if not have:
            return out
        present = torch.stack(list(have.values()))
        partial = (~present.all(0)).nonzero().flatten()
        if partial.numel():
            part = present[:, partial]
            total = torch.zeros((partial.numel(), *out[next(iter(have))].shape[1:]), dtype=torch.float32)
            for nid, ok in have.items():
                rows = out[nid].index_select(0, partial).float()
                total += torch.where(ok[partial].view(-1, *[1] * (rows.dim() - 1)), rows, 0.0)
            count = part.sum(0).clamp(min=1).view(-1, *[1] * (total.dim() - 1))
            fill = total / count
            if self.base in have:
                base_ok = have[self.base][partial]
                fill[base_ok] = out[self.base].index_select(0, partial[base_ok]).float()
            for nid, ok in have.items():
                missing = ~ok[partial]
                if missing.any():
                    out[nid][partial[missing]] = fill[missing].to(out[nid].dtype)
        return out

    def write_tokenizer(self, writer) -> None:
        """Put the output's tokenizer files into ``writer`` (a ``CheckpointWriter``): the source model's
        files as they are, or the union tokenizer as ``transformers`` saves it."""
        if self.union is None:
            for fname in TOKENIZER_FILES:
                if (self.folder / fname).is_file():
                    writer.add_file(self.folder / fname)
            return
        with tempfile.TemporaryDirectory() as tmp:
            self.union.save_pretrained(tmp)
            for f in sorted(Path(tmp).iterdir()):
                if f.is_file():
                    writer.add_file(f)


def _digest(folder: Path) -> str | None:
    """A hash of the file that defines a folder's tokens (None: no tokenizer files), cached by mtime and size."""
    source = next((folder / f for f in _VOCAB_FILES if (folder / f).is_file()), None)
    if source is None:
        return None
    stat = source.stat()
    key = (str(source.resolve()), stat.st_mtime_ns, stat.st_size)
    with _CACHE_LOCK:
        if key not in _DIGESTS:
            _DIGESTS[key] = hashlib.sha256(source.read_bytes()).hexdigest()
        return _DIGESTS[key]


_DIGESTS: dict[tuple[str, int, int], str] = {}


def same_tokens(a: Checkpoint, b: Checkpoint) -> bool:
    """True when two models of equal embedding rows hold the same token at every id (or either has no
    tokenizer files); byte-identical tokenizer files are not parsed."""
    fa, fb = folder_of(a), folder_of(b)
    da, db = _digest(fa), _digest(fb)
    if da is None or db is None or da == db:
        return True
    rows = vocab_rows(a) or 0
    return read_vocabulary(fa).token_ids(rows) == read_vocabulary(fb).token_ids(rows)


def needs_alignment(checkpoints: Mapping[str, Checkpoint]) -> bool:
    """True when the full models' vocabularies differ: in rows of their vocabulary tensors, or in which
    token their tokenizers put at an id (so the rows must be aligned by token)."""
    models = [c for c in checkpoints.values() if c.kind == "model" and vocab_rows(c) is not None]
    if len({vocab_rows(c) for c in models}) > 1:
        return True
    try:
        return any(not same_tokens(models[0], c) for c in models[1:])
    except EngineInputError:  # an unreadable tokenizer beside equal rows: merged by index, as it always was
        return False


def plan_vocabulary(checkpoints: Mapping[str, Checkpoint], base: str, source: str) -> VocabPlan:
    """The index maps that align the full models' vocabulary rows by token on the output vocabulary of
    ``source`` (a node id, or ``union``); ``base`` is the node whose rows and tokenizer lead.

    Input errors name the folder without tokenizer files, or both files of a union of different kinds."""
    import torch

    models = {nid: c for nid, c in checkpoints.items() if c.kind == "model" and vocab_rows(c) is not None}
    if base not in models:
        raise EngineInputError(f"node '{base}' has no embedding tensor to align vocabularies on")
    rows = {nid: vocab_rows(c) or 0 for nid, c in models.items()}
    vocabs = {nid: read_vocabulary(folder_of(c)) for nid, c in models.items()}
    for nid in [base, *models]:
        if vocabs[nid] is None:
            if nid != base and rows[nid] == rows[base] and vocabs[base] is not None:
                vocabs[nid] = vocabs[base]  # no tokenizer of its own: the base's vocabulary, as mergekit assumes
                continue
            raise EngineInputError(f"'{nid}' has no tokenizer files ({', '.join(_VOCAB_FILES)}) to align its "
                                   f"{rows[nid]} embedding rows by token (the base '{base}' has {rows[base]})",
                                   path=str(folder_of(models[nid])))
    union = None
    if source == UNION:
        union, out_tokens = _union(models, vocabs, rows, base)
        out_rows, folder = max(len(union), rows[base]), vocabs[base].folder
    else:
        if source not in models:
            raise EngineInputError(f"tokenizer_source '{source}' is not a full model of this merge")
        out_tokens, out_rows, folder = vocabs[source].token_ids(rows[source]), rows[source], vocabs[source].folder
    names = frozenset(n for nid, c in models.items() for n in vocab_tensors(c, rows[nid]))
    token_at = {i: t for t, i in out_tokens.items() if i < out_rows}
    maps = {nid: _index_map(vocabs[nid].token_ids(rows[nid]), rows[nid], token_at, out_rows) for nid in models}
    plan = VocabPlan(source, base, out_rows, names, maps, rows, folder, union)
    unheld = int((torch.stack(list(maps.values())) < 0).all(0).sum())
    if unheld:
        plan.notes.append(f"{unheld} output token(s) have a row in no model; their rows are zero")
    return plan


def _index_map(own: dict[str, int], own_rows: int, token_at: dict[int, str], out_rows: int) -> torch.Tensor:
    """For each output row, this model's row holding the same token (or, for a tokenless padding row,
    the same index when that row of this model is tokenless too); -1 where it has none."""
    import torch

    index = torch.full((out_rows,), -1, dtype=torch.long)
    if token_at:
        index[list(token_at)] = torch.tensor([own.get(t, -1) for t in token_at.values()], dtype=torch.long)
    padding = sorted(set(range(min(out_rows, own_rows))) - set(token_at) - set(own.values()))
    if padding:
        index[padding] = torch.tensor(padding, dtype=torch.long)
    return index


def _union(models: Mapping[str, Checkpoint], vocabs: Mapping[str, Vocabulary], rows: Mapping[str, int],
           base: str):
    """The base tokenizer (``transformers``) with every other model's missing tokens added, and its vocabulary."""
    first = vocabs[base]
    for nid in models:
        if vocabs[nid].signature != first.signature:
            raise EngineInputError(f"tokenizer_source 'union' cannot join tokenizers of different kinds: "
                                   f"'{first.file}' is {describe_kind(first)} but '{vocabs[nid].file}' is "
                                   f"{describe_kind(vocabs[nid])}; choose one model's tokenizer instead")
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(first.folder), use_fast=True)
    except Exception as exc:  # the libraries raise many types for a folder they cannot load
        raise EngineInputError(f"cannot load the base tokenizer ({exc})", path=str(first.folder)) from exc
    known = set(tok.get_vocab())
    regular: list[str] = []
    added: dict[str, AddedToken] = {}
    for nid in [base, *[n for n in models if n != base]]:
        v = vocabs[nid]
        for t, _ in sorted(v.token_ids(rows[nid]).items(), key=lambda kv: kv[1]):
            if t in v.added:
                if t not in known and t not in added:
                    added[t] = AddedToken(t, **v.added[t])
            elif t not in known:
                known.add(t)
                regular.append(t)
    tok.add_tokens(regular)
    tok.add_tokens(list(added.values()))
    return tok, tok.get_vocab()


class VocabAlignment:
    """A run's shared view of its full models through one ``VocabPlan``: ``views`` are checkpoints whose
    vocabulary tensors have the output's rows. Reading one such tensor of one model reads that name in
    every model once, aligns them together (the stand-in rows need the others) and hands each model its
    own; the aligned sets of the last few names wait for their other models under a lock."""

    _KEEP = 3  # names whose aligned tensors wait (the current one, the prefetched next, a statistic pass)

    def __init__(self, checkpoints: Mapping[str, Checkpoint]):
        self.raw = dict(checkpoints)
        self.plan: VocabPlan | None = None
        self._cache: dict[str, dict[str, torch.Tensor]] = {}
        self._lock = threading.Lock()
        self.views: dict[str, Checkpoint] = {nid: (AlignedCheckpoint(c, nid, self) if c.kind == "model" else c)
                                             for nid, c in checkpoints.items()}

    def use(self, plan: VocabPlan) -> None:
        """Align with ``plan`` from now on."""
        with self._lock:
            self.plan = plan
            self._cache.clear()

    def aligned(self, name: str) -> bool:
        """True when tensor ``name`` is re-indexed under the current plan."""
        return self.plan is not None and not self.plan.identity and name in self.plan.names

    def take(self, nid: str, name: str) -> torch.Tensor:
        """Model ``nid``'s tensor ``name`` in output row order."""
        with self._lock:
            ready = self._cache.get(name)
            if ready is None or nid not in ready:
                raw = {m: c.get(name) for m, c in self.raw.items() if m in self.plan.maps and name in c}
                ready = self._cache[name] = self.plan.align(name, raw)
                while len(self._cache) > self._KEEP:
                    self._cache.pop(next(iter(self._cache)))
            t = ready.pop(nid)
            if not ready:
                self._cache.pop(name, None)
            return t


class AlignedCheckpoint(Checkpoint):
    """A full model seen through a ``VocabAlignment``: its vocabulary tensors report and give the output
    vocabulary's rows; every other tensor is the model's own."""

    def __init__(self, inner: Checkpoint, nid: str, alignment: VocabAlignment):
        super().__init__(inner.path)
        self.inner, self.nid, self.alignment = inner, nid, alignment
        self.format, self.kind = inner.format, inner.kind
        self.metadata, self.notes = inner.metadata, inner.notes

    @property
    def names(self) -> list[str]:
        return self.inner.names

    def __contains__(self, name: str) -> bool:
        return name in self.inner

    def info(self, name: str) -> TensorInfo:
        info = self.inner.info(name)
        if self.alignment.aligned(name):
            return replace(info, shape=(self.alignment.plan.rows, *info.shape[1:]))
        return info

    def _load(self, name: str) -> torch.Tensor:
        if self.alignment.aligned(name):
            return self.alignment.take(self.nid, name)
        return self.inner.get(name)

    def config(self) -> dict[str, Any] | None:
        return self.inner.config()

    def close(self) -> None:
        self.inner.close()
