"""Which plugin files may run: a per-user list of trusted files, remembered by the SHA-256 of their content.

A plugin task is Python code; opening a project someone shared must never run it unasked. The one place
that imports plugin code (``engine.evaluation.plugin.load_plugin``) asks ``check(path)`` first:

- the default policy runs a file only when its current content is in the trust list (a changed file
  has a new hash and must be trusted again); otherwise ``UntrustedPlugin`` is raised before any import;
- the command line installs ``announce_and_trust``: typing ``weightsmith evaluate`` on a recipe is the
  user's explicit request, so the file runs, and stderr says which file's code is running.

The list lives in ``trusted_plugins.json`` in the user config folder (``$WEIGHTSMITH_HOME/config`` when
that is set, as for the app's settings).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Callable

import platformdirs

from engine.errors import EngineInputError
from engine.jsonfiles import read_json, write_json


class UntrustedPlugin(EngineInputError):
    """A plugin file that the user has not trusted (in its current content) was asked to run."""

    def __init__(self, path: Path, digest: str):
        super().__init__(f"this plugin runs Python code and is not trusted yet (SHA-256 {digest[:16]}…); "
                         "trust it in the app, or run it from the command line", path=str(path))
        self.plugin = path
        self.digest = digest


def store_file() -> Path:
    """Where the trust list is kept."""
    home = os.environ.get("WEIGHTSMITH_HOME")
    folder = Path(home) / "config" if home else Path(platformdirs.user_config_dir("weightsmith"))
    return folder / "trusted_plugins.json"


def digest(path: str | Path) -> str:
    """SHA-256 of the file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _trusted() -> dict[str, str]:
    f = store_file()
    if not f.exists():
        return {}
    try:
        data = read_json(f, "the plugin trust list")
    except EngineInputError:
        return {}
    entries = data.get("trusted") if isinstance(data, dict) else None
    return {str(k): str(v) for k, v in entries.items()} if isinstance(entries, dict) else {}


def is_trusted(path: str | Path) -> bool:
    """Whether the file's current content has been trusted."""
    return digest(path) in _trusted()


def trust(path: str | Path) -> None:
    """Remember the file's current content as trusted."""
    entries = _trusted()
    entries[digest(path)] = str(Path(path).resolve())
    f = store_file()
    f.parent.mkdir(parents=True, exist_ok=True)
    write_json(f, {"trusted": entries})


def require_trusted(path: Path) -> None:
    """The default policy: raise ``UntrustedPlugin`` unless the file's content is trusted."""
    if not is_trusted(path):
        raise UntrustedPlugin(path, digest(path))


def announce_and_trust(path: Path) -> None:
    """The command line's policy: run the file the user named, saying so on stderr."""
    print(f"note: running Python code from the plugin task file {path}", file=sys.stderr)


_policy: Callable[[Path], None] = require_trusted


def set_policy(policy: Callable[[Path], None]) -> Callable[[Path], None]:
    """Replace the policy ``check`` applies (the command line installs ``announce_and_trust``); returns
    the previous one, to put back."""
    global _policy
    previous, _policy = _policy, policy
    return previous


def check(path: Path) -> None:
    """Apply the current policy to a plugin file before it is imported."""
    _policy(path)
