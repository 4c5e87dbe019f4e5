"""User settings and the app's folders (platformdirs), persisted as JSON.

``AppPaths`` names where settings, autosaves and the zoo live; ``WEIGHTSMITH_HOME`` (used by tests and
portable installs) puts them all under one folder. ``Settings`` is a plain dataclass the window reads
and the Settings dialog edits; ``save`` writes it atomically.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import platformdirs

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
        """Read the settings; a missing or unreadable file gives the defaults (and a log line)."""
        try:
            data = json.loads(paths.settings_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable settings %s (%s)", paths.settings_file, exc)
            return cls()
        known = {f.name for f in fields(cls)}
        settings = cls(**{k: v for k, v in data.items() if k in known})
        if settings.theme not in THEMES:
            settings.theme = "dark"
        if settings.save_dtype not in SAVE_DTYPES:
            settings.save_dtype = "auto"
        return settings

    def save(self, paths: AppPaths) -> None:
        paths.config.mkdir(parents=True, exist_ok=True)
        tmp = paths.settings_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        tmp.replace(paths.settings_file)

    def add_recent(self, path: str | Path) -> None:
        """Put ``path`` first in the recent files (no duplicates, at most ``MAX_RECENT``)."""
        p = str(Path(path).resolve())
        self.recent_files = [p, *[r for r in self.recent_files if r != p]][:MAX_RECENT]
