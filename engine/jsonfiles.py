"""JSON files read with readable errors and written atomically (recipes, projects, autosaves)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

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
    """Write JSON through a temporary sibling renamed over ``path``: a crash leaves the old file intact."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=indent)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
