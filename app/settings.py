"""User settings and the app's folders (platformdirs), persisted as JSON.

``AppPaths`` names where settings, autosaves and the zoo live; ``WEIGHTSMITH_HOME`` (used by tests and
portable installs) puts them all under one folder. ``Settings`` is a plain dataclass the window reads
and the Settings dialog edits; ``save`` writes it atomically.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import platformdirs

from engine.errors import EngineInputError
from engine.jsonfiles import read_json

log = logging.getLogger(__name__)

APP_NAME = "weightsmith"  # the platformdirs folder name (the engine keeps its zoo in the same data folder)
THEMES = ("dark", "light")
SAVE_DTYPES = ("auto", "fp32", "fp16", "bf16")
MAX_RECENT = 10


@dataclass(frozen=True)
class AppPaths:
    """The per-user folders: ``config`` (settings.json) and ``data`` (autosaves, the demo zoo)."""

    config: Path
    data: Path

    @classmethod
    def default(cls) -> "AppPaths":
        home = os.environ.get("WEIGHTSMITH_HOME")
        if home:
            return cls(Path(home) / "config", Path(home) / "data")
        return cls(Path(platformdirs.user_config_dir(APP_NAME)),
                   Path(platformdirs.user_data_dir(APP_NAME)))

    @property
    def settings_file(self) -> Path:
        return self.config / "settings.json"

    @property
    def autosave_dir(self) -> Path:
        return self.data / "autosave"

    @property
    def zoo_dir(self) -> Path:
        """The demo model zoo (``engine.zoo.default_zoo_dir()`` unless ``WEIGHTSMITH_HOME`` is set)."""
        return self.data / "zoo"

    @property
    def lm_zoo_dir(self) -> Path:
        """The language-model demo zoo, beside the image zoo (``engine.zoo.lm.default_lm_zoo_dir()``)."""
        return self.data / "lm-zoo"


@dataclass
class Settings:
    """What the user chooses once: compute device, output dtype and folder, theme; plus recent files
    and the window layout (base64 of Qt's saved state)."""

    device: str = "auto"
    save_dtype: str = "auto"
    output_dir: str = str(Path.home() / "Weightsmith" / "merged")
    theme: str = "dark"
    recent_files: list[str] = field(default_factory=list)
    window_geometry: str = ""
    window_state: str = ""

    @classmethod
    def load(cls, paths: AppPaths) -> "Settings":
        """Read the settings field by field: a field of the wrong type or value gets its default, the rest
        are kept; whenever something was dropped the file is copied beside as ``settings.json.bad``."""
        try:
            data = read_json(paths.settings_file, "settings")
        except EngineInputError as exc:
            if not paths.settings_file.exists():
                return cls()
            return cls._fallback(paths, str(exc), {})
        if not isinstance(data, dict):
            return cls._fallback(paths, f"holds {type(data).__name__}, not an object", {})
        kept, problems = {}, []
        for f in fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            if _valid_setting(f.name, value):
                kept[f.name] = list(value) if f.name == "recent_files" else value
            else:
                problems.append(f"'{f.name}' = {value!r:.60}")
        return cls._fallback(paths, "; ".join(problems), kept) if problems else cls(**kept)

    @classmethod
    def _fallback(cls, paths: AppPaths, why: str, kept: dict) -> "Settings":
        bad = paths.settings_file.with_name(paths.settings_file.name + ".bad")
        try:
            shutil.copyfile(paths.settings_file, bad)
        except OSError:
            pass
        log.warning("settings %s: using defaults for what is unreadable (%s); the file is kept as %s",
                    paths.settings_file, why, bad.name)
        return cls(**kept)

    def save(self, paths: AppPaths) -> None:
        paths.config.mkdir(parents=True, exist_ok=True)
        tmp = paths.settings_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        tmp.replace(paths.settings_file)

    def add_recent(self, path: str | Path) -> None:
        """Put ``path`` first in the recent files (no duplicates, at most ``MAX_RECENT``)."""
        p = str(Path(path).resolve())
        self.recent_files = [p, *[r for r in self.recent_files if r != p]][:MAX_RECENT]


def _valid_setting(name: str, value: object) -> bool:
    """Whether a stored value can be used for the setting ``name``."""
    if name == "theme":
        return value in THEMES
    if name == "save_dtype":
        return value in SAVE_DTYPES
    if name == "recent_files":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, str)
