"""JSON files read with readable errors and written atomically (recipes, projects, autosaves, settings).

``expect`` is the one field check the typed loaders of each format use: a wrong type becomes an
EngineInputError naming the field, never a foreign exception further on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from engine.errors import EngineInputError


def read_json(path: str | Path, what: str = "file") -> Any:
    """Parse a JSON file; a missing, unreadable or malformed file raises EngineInputError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EngineInputError(f"cannot read {what} ({exc.strerror or exc})", path=str(path)) from exc
    except ValueError as exc:
        raise EngineInputError(f"{what} is not valid JSON ({exc})", path=str(path)) from exc
    except RecursionError as exc:
        raise EngineInputError(f"{what} nests lists or objects too deeply to read", path=str(path)) from exc


def write_json(path: str | Path, data: Any, indent: int | None = 2) -> None:
    """Write strict JSON (a NaN or infinite number is written as null, see ``strict``) through a
    temporary sibling renamed over ``path``: a crash leaves the old file intact."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(strict(data), f, indent=indent, allow_nan=False)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def strict(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None, so that it writes as strict JSON
    (``json.dumps(strict(v), allow_nan=False)`` never fails on numbers and never writes a bare NaN)."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    return value


_TYPE_NAMES = {dict: "an object", list: "a list", str: "text", int: "a whole number", float: "a number",
               bool: "true or false", type(None): "null"}


def expect(value: Any, types: type | Sequence[type], where: str) -> Any:
    """``value`` if it has one of ``types`` (bool is not a number here), else an EngineInputError naming
    ``where``; ``float`` accepts integers too."""
    allowed = tuple(types) if isinstance(types, (list, tuple)) else (types,)
    if float in allowed:
        allowed = (*allowed, int)
    ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
    if not ok:
        wanted = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in (tuple(types) if isinstance(types, (list, tuple)) else (types,)))
        raise EngineInputError(f"{where} must be {wanted}, got {type(value).__name__}")
    return value
