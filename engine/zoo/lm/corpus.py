"""The LM zoo's text domains, drawn from the Python installation or generated from a seed.

Domains (each split into ``train``/``val``/``test`` with no document shared between splits):

- ``python``: the standard library's top-level ``.py`` modules, docstrings and comments removed;
- ``prose``: those modules' docstrings (English prose);
- ``data``: JSON lines, CSV tables and INI sections generated from a seed;
- ``c``: the C headers of the Python installation's ``include`` folder (only when it holds enough);
- ``logs``: application log lines generated from a seed (the LoRA expert's domain).

File-based domains split by a hash of the file name, so the splits do not depend on the seed.
``held_out_items`` turns held-out text into multiple-choice and generation examples.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import re
import sysconfig
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from engine.errors import EngineInputError

SPLITS = ("train", "val", "test")
MIN_C_HEADER_CHARS = 100_000


@dataclass(frozen=True)
class Domain:
    """One text domain: its name, a description and a function giving a split's documents."""

    name: str
    description: str
    documents: Callable[[str, int], Iterator[str]]  # (split, seed) → documents in a fixed order


def _split_of(name: str) -> str:
    """``val`` or ``test`` for one file in ten each, by a hash of its name; else ``train``."""
    bucket = hashlib.sha256(name.encode()).digest()[0] % 10
    return "val" if bucket == 0 else "test" if bucket == 1 else "train"


def stdlib_dir() -> Path:
    """The folder of the standard library's ``.py`` sources."""
    return Path(sysconfig.get_paths()["stdlib"])


def include_dir() -> Path:
    """The Python installation's C header folder (may be missing)."""
    return Path(sysconfig.get_paths()["include"])


def _stdlib_modules(split: str) -> Iterator[tuple[str, ast.Module]]:
    files = sorted(p for p in stdlib_dir().glob("*.py") if _split_of(p.name) == split)
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
            tree = ast.parse(text)
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
            continue
        yield text, tree


def strip_docs(source: str, tree: ast.Module | None = None) -> str:
    """Python source without its comments and docstrings, blank-line runs collapsed."""
    lines = source.splitlines()
    drop: set[int] = set()
    for node in ast.walk(tree or ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                drop.update(range(first.lineno - 1, first.end_lineno))
    cuts: dict[int, int] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            cuts[tok.start[0] - 1] = tok.start[1]
    out: list[str] = []
    for i, line in enumerate(lines):
        if i in drop:
            continue
        if i in cuts:
            line = line[: cuts[i]].rstrip()
            if not line:
                continue
        out.append(line.rstrip())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip("\n") + "\n"


def _python_documents(split: str, seed: int) -> Iterator[str]:
    for text, tree in _stdlib_modules(split):
        yield strip_docs(text, tree)


def _prose_documents(split: str, seed: int) -> Iterator[str]:
    for _, tree in _stdlib_modules(split):
        docs = []
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node, clean=True)
                if doc and len(doc) >= 60 and sum(c.isalpha() for c in doc) > 0.6 * len(doc):
                    docs.append(doc.strip())
        if docs:
            yield "\n\n".join(docs) + "\n"


def _c_documents(split: str, seed: int) -> Iterator[str]:
    root = include_dir()
    for path in sorted(root.rglob("*.h")):
        name = path.relative_to(root).as_posix()
        if _split_of(name) == split:
            try:
                yield path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue


_WORDS = ("alpha bravo cedar delta ember falcon garnet harbor indigo juniper kestrel lumen maple nectar onyx "
          "pepper quartz raven saffron timber umber violet willow xenon yarrow zephyr").split()
_NAMES = "Ada Bruno Chen Dalia Emeka Farah Goran Hana Ines Jonas Keiko Luis Mira Nadia Omar Priya Rosa Sven Tariq Yusuf".split()
_CITIES = "Accra Berlin Bogota Cairo Delhi Hanoi Lagos Lima Lisbon Madrid Nairobi Oslo Porto Quito Seoul Tokyo".split()
_FIELDS = ("id", "name", "email", "city", "price", "quantity", "active", "created", "tags", "score")


def _record(rng: np.random.Generator, fields: tuple[str, ...]) -> dict[str, object]:
    name = str(rng.choice(_NAMES))
    values: dict[str, object] = {
        "id": int(rng.integers(1, 100_000)), "name": name,
        "email": f"{name.lower()}.{rng.choice(_WORDS)}@example.org", "city": str(rng.choice(_CITIES)),
        "price": round(float(rng.uniform(0.5, 500)), 2), "quantity": int(rng.integers(0, 250)),
        "active": bool(rng.integers(0, 2)),
        "created": f"20{rng.integers(10, 26):02d}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}",
        "tags": [str(t) for t in rng.choice(_WORDS, size=int(rng.integers(0, 4)), replace=False)],
        "score": round(float(rng.normal(70, 12)), 1)}
    return {k: values[k] for k in fields}


def _cell(value: object) -> str:
    if isinstance(value, list):
        return ";".join(value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def _data_document(rng: np.random.Generator) -> str:
    kind = int(rng.integers(0, 3))
    fields = tuple(str(f) for f in rng.choice(_FIELDS, size=int(rng.integers(3, 7)), replace=False))
    if "id" not in fields:
        fields = ("id", *fields)
    rows = [_record(rng, fields) for _ in range(int(rng.integers(4, 12)))]
    if kind == 0:
        return "".join(json.dumps(r) + "\n" for r in rows)
    if kind == 1:
        return ",".join(fields) + "\n" + "".join(",".join(_cell(r[f]) for f in fields) + "\n" for r in rows)
    out = []
    for r in rows[:4]:
        out.append(f"[{rng.choice(_WORDS)}.{r['id']}]")
        out += [f"{k} = {', '.join(v) if isinstance(v, list) else v}" for k, v in r.items() if k != "id"]
        out.append("")
    return "\n".join(out)


_LEVELS = ("DEBUG", "INFO", "INFO", "INFO", "WARNING", "ERROR")
_LOGGERS = ("http.server", "db.pool", "auth", "scheduler", "cache", "worker", "storage.s3", "mail")
_MESSAGES = (
    "GET /api/{w}/{n} {status} in {ms} ms", "POST /api/{w} {status} in {ms} ms",
    "connection {n} returned to pool ({k} idle)", "user {name} logged in from {ip}",
    "job {w}-{n} finished in {ms} ms", "cache miss for key {w}:{n}", "retrying upload of {w}/{n}.bin (attempt {k})",
    "sent {k} messages to {name}", "slow query on table {w}: {ms} ms", "token expired for {name}",
)


def _log_document(rng: np.random.Generator) -> str:
    t = int(rng.integers(0, 86_400 * 365))
    lines = []
    for _ in range(int(rng.integers(8, 20))):
        t += int(rng.integers(0, 90))
        day, sec = divmod(t, 86_400)
        msg = str(rng.choice(_MESSAGES)).format(
            w=rng.choice(_WORDS), n=int(rng.integers(1, 10_000)), status=int(rng.choice([200, 201, 204, 302, 404, 500])),
            ms=int(rng.integers(1, 3000)), k=int(rng.integers(1, 9)), name=str(rng.choice(_NAMES)).lower(),
            ip=".".join(str(int(x)) for x in rng.integers(1, 255, 4)))
        lines.append(f"2025-{1 + day // 31 % 12:02d}-{1 + day % 28:02d} {sec // 3600:02d}:{sec // 60 % 60:02d}:"
                     f"{sec % 60:02d},{int(rng.integers(0, 1000)):03d} {rng.choice(_LEVELS):<7} "
                     f"[{rng.choice(_LOGGERS)}] {msg}")
    return "\n".join(lines) + "\n"


def _generated(make: Callable[[np.random.Generator], str], stream: int) -> Callable[[str, int], Iterator[str]]:
    def documents(split: str, seed: int) -> Iterator[str]:
        rng = np.random.default_rng([seed, stream, SPLITS.index(split)])
        while True:
            yield make(rng)
    return documents


DOMAINS: dict[str, Domain] = {d.name: d for d in (
    Domain("python", "Python code: the standard library's modules without docstrings and comments", _python_documents),
    Domain("prose", "English prose: the standard library's docstrings", _prose_documents),
    Domain("data", "structured data: JSON lines, CSV tables and INI sections generated from the seed", _generated(_data_document, 1)),
    Domain("c", "C headers of the Python installation's include folder", _c_documents),
    Domain("logs", "application log lines generated from the seed", _generated(_log_document, 2)),
)}


def available_domains() -> list[str]:
    """The domains this installation can provide; ``c`` only with enough C headers."""
    if not any(stdlib_dir().glob("*.py")):
        raise EngineInputError("the LM zoo reads the standard library's Python sources, but this folder holds none "
                               "(a frozen bundle?): build it from a pip installation", path=str(stdlib_dir()))
    names = ["python", "prose", "data", "logs"]
    root = include_dir()
    headers = sum(p.stat().st_size for p in root.rglob("*.h")) if root.is_dir() else 0
    if headers >= MIN_C_HEADER_CHARS:
        names.insert(3, "c")
    return names


def take(domain: str, split: str, seed: int, chars: int) -> list[str]:
    """The first documents of a domain's split, ``chars`` characters in all.

    Each document is cut to an eighth of that (at a line end), so no single file fills a split.
    """
    out, total, per_doc = [], 0, max(2000, chars // 8)
    for doc in DOMAINS[domain].documents(split, seed):
        if total >= chars:
            break
        doc = doc[: min(per_doc, chars - total)]
        doc = doc[: doc.rfind("\n") + 1] or doc
        out.append(doc)
        total += len(doc)
    return out


def _usable(line: str, min_len: int) -> bool:
    s = line.strip()
    return len(s) >= min_len and len(s.split()) >= 3


def held_out_items(text: str, rng: np.random.Generator, n_choice: int, n_generate: int,
                   context_lines: int = 6) -> tuple[list[dict], list[dict]]:
    """Multiple-choice and generation examples from held-out ``text``.

    A choice item's question is up to ``context_lines`` lines; its choices are the true next line and
    three corruptions (its words shuffled, its words' inner letters shuffled, a line from elsewhere),
    in random order. A generation item's prompt is the context plus the first part of a line; its
    reference is the rest of that line (generation stops at the newline).
    """
    lines = text.split("\n")
    candidates = [i for i in range(2, len(lines)) if _usable(lines[i], 16)]
    order = rng.permutation(len(candidates))
    choice, generate = [], []
    for j in order:
        i = candidates[int(j)]
        context = "\n".join(lines[max(0, i - context_lines): i]) + "\n"
        if not context.strip():
            continue
        line = lines[i].rstrip()
        if len(choice) < n_choice:
            indent, words = line[: len(line) - len(line.lstrip())], line.split()
            shuffled = indent + " ".join(words[k] for k in rng.permutation(len(words)))
            scrambled = indent + " ".join(_scramble(w, rng) for w in words)
            other = lines[candidates[int(rng.integers(len(candidates)))]].rstrip()
            options = [line, shuffled, scrambled, other]
            if len(set(options)) == 4:
                perm = [int(k) for k in rng.permutation(4)]
                choice.append({"question": context, "choices": [options[k] for k in perm], "answer": perm.index(0)})
                continue
        if len(generate) < n_generate and len(line.strip()) >= 24:
            cut = line.rfind(" ", 0, len(line) // 2 + 1)
            if cut > len(line) - len(line.lstrip()):
                generate.append({"prompt": context + line[:cut], "reference": line[cut:]})
        if len(choice) >= n_choice and len(generate) >= n_generate:
            break
    return choice, generate


def _scramble(word: str, rng: np.random.Generator) -> str:
    if len(word) < 4:
        return word
    inner = list(word[1:-1])
    return word[0] + "".join(inner[k] for k in rng.permutation(len(inner))) + word[-1]
