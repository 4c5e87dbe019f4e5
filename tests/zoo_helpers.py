"""A reduced demo zoo built once per test session (seconds) and shared by the tests that read it.

Tests that change files copy it first (``copy_zoo``). Building and evaluating run single-threaded:
the tiny matrices gain nothing from more threads, and on a busy machine extra threads only wait.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import torch

from engine.zoo import build_zoo


@lru_cache(maxsize=None)
def reduced_zoo(seed: int = 0) -> Path:
    """The folder of a reduced zoo built with ``seed`` (built on first use)."""
    root = Path(tempfile.mkdtemp(prefix="ws-zoo-"))
    atexit.register(shutil.rmtree, root, True)
    build_zoo(root / "zoo", size="reduced", seed=seed)
    return root / "zoo"


def copy_zoo(dest: Path, seed: int = 0) -> Path:
    """A private, writable copy of the shared reduced zoo."""
    return Path(shutil.copytree(reduced_zoo(seed), dest))


class single_thread:
    """Context manager: torch on one thread inside, the previous count restored after."""

    def __enter__(self) -> None:
        self._threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self._threads)


@lru_cache(maxsize=None)
def reduced_lm_zoo(seed: int = 0) -> Path:
    """The folder of a reduced LM domains zoo built with ``seed`` (built on first use, seconds)."""
    from engine.zoo.lm import build_lm_zoo

    root = Path(tempfile.mkdtemp(prefix="ws-lm-zoo-"))
    atexit.register(shutil.rmtree, root, True)
    return build_lm_zoo(root / "lm-zoo", size="reduced", seed=seed).parent
