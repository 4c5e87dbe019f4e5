"""Readers of users' data files: each streams its file and names the file and line of every problem.

- ``text_lines`` yields (line number, text) of a UTF-8 file one line at a time (a byte that is not
  UTF-8 is reported with its line); ``read_text`` joins them (a file with no text is an error);
- ``text_files`` is a text file, or every ``.txt`` file under a folder (sorted);
- ``jsonl_rows`` yields (line number, object) of a JSON Lines file; ``csv_rows`` (line number, row) of
  a CSV file with a header; ``table_rows`` picks one by the file's suffix;
- ``labelled_rows`` reads (line, text, label) examples from a CSV or JSONL file;
- ``read_safetensors`` reads a whole safetensors file; ``file_identity`` is a cache-key part that
  changes whenever the file does.

Every problem raises ``EngineInputError`` with the file as its ``path`` and the line in the message.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterator

import torch

from engine.errors import EngineInputError


def file_identity(path: Path) -> str:
    """Resolved path, size and modification time of a file (or of every file under a folder)."""
    path = Path(path)
    if not path.exists():
        return f"{path}:missing"
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)


def read_safetensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file (copies, not views of a memory map)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise EngineInputError(f"{what} file is missing", path=str(path))
    try:  # copies: a file rewritten later must not crash the process
        return {k: v.clone() for k, v in load_file(str(path)).items()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise EngineInputError(f"cannot read {what} file {path}: it is not a valid safetensors file ({exc})",
                               path=str(path)) from exc


def _require_file(path: Path, what: str) -> None:
    if not path.exists():
        raise EngineInputError(f"{what} not found", path=str(path))
    if not path.is_file():
        raise EngineInputError(f"{what} is not a file", path=str(path))


def text_lines(path: Path, what: str = "data file") -> Iterator[tuple[int, str]]:
    """(line number from 1, text with its newline) of a UTF-8 file, read one line at a time."""
    path = Path(path)
    _require_file(path, what)
    try:
        with path.open("rb") as f:
            for number, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise EngineInputError(f"line {number} is not valid UTF-8 text ({exc.reason} at byte {exc.start} "
                                           "of the line)", path=str(path)) from None
                if number == 1:
                    line = line.removeprefix("\ufeff")
                yield number, line[:-2] + "\n" if line.endswith("\r\n") else line
    except OSError as exc:
        raise EngineInputError(f"cannot read the {what} ({exc})", path=str(path)) from exc


def read_text(path: Path, what: str = "text file") -> str:
    """The whole text of a UTF-8 file; an error when it holds no text (empty or only whitespace)."""
    text = "".join(line for _, line in text_lines(path, what))
    if not text.strip():
        raise EngineInputError(f"the {what} is empty", path=str(path))
    return text


def text_files(path: Path) -> list[Path]:
    """``path`` when it is a file, else every ``.txt`` file under the folder ``path``, sorted."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise EngineInputError("the folder holds no .txt files", path=str(path))
        return files
    _require_file(path, "text file")
    return [path]


def jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of a JSON Lines file; an error for a line that is
    not a JSON object, and for a file with no rows at all."""
    count = 0
    for number, line in text_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise EngineInputError(f"line {number} is not valid JSON ({exc})", path=str(path)) from None
        if not isinstance(row, dict):
            raise EngineInputError(f"line {number} is not a JSON object", path=str(path))
        count += 1
        yield number, row
    if not count:
        raise EngineInputError("the data file holds no examples", path=str(path))


def csv_rows(path: Path, required: tuple[str, ...] = ()) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row by column name) of a CSV file with a header row; ``required`` columns must exist."""
    lines = text_lines(path)
    reader = csv.reader(line for _, line in lines)
    header = next(reader, None)
    if not header:
        raise EngineInputError("the data file holds no examples", path=str(path))
    missing = [c for c in required if c not in header]
    if missing:
        raise EngineInputError(f"the data file has no '{missing[0]}' column (it has {', '.join(header)})",
                               path=str(path))
    count = 0
    try:
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                raise EngineInputError(f"line {reader.line_num} has {len(cells)} cells, the header {len(header)}",
                                       path=str(path))
            count += 1
            yield reader.line_num, dict(zip(header, cells))
    except csv.Error as exc:
        raise EngineInputError(f"line {reader.line_num} is not valid CSV ({exc})", path=str(path)) from None
    if not count:
        raise EngineInputError("the data file holds no examples", path=str(path))


def table_rows(path: Path, required: tuple[str, ...] = ()) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a ``.csv`` or ``.jsonl`` file by its suffix; every row must have the ``required`` fields."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        yield from csv_rows(path, required)
        return
    if suffix not in (".jsonl", ".json"):
        _require_file(path, "data file")
        raise EngineInputError("unknown data file type (expected .csv or .jsonl)", path=str(path))
    for number, row in jsonl_rows(path):
        missing = [c for c in required if c not in row]
        if missing:
            raise EngineInputError(f"line {number} has no '{missing[0]}' field (it has {', '.join(row)})",
                                   path=str(path))
        yield number, row


def labelled_rows(path: Path, text_field: str = "text", label_field: str = "label") -> list[tuple[int, str, Any]]:
    """(line, text, label) examples of a CSV or JSONL file; a row without a text or a label is an error."""
    out = []
    for number, row in table_rows(path, (text_field, label_field)):
        if not isinstance(row.get(text_field), str) or row.get(label_field) in (None, ""):
            raise EngineInputError(f"line {number} lacks a text or a label", path=str(path))
        out.append((number, row[text_field], row[label_field]))
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
    raise EngineInputError(f"{where}: unknown label {label!r} (the classes are {', '.join(classes)})",
                           path=str(path))
