"""Runtime services: compute-device choice, dtypes, progress reporting and cancellation.

The device and dtype helpers need torch; they are imported on first use (PEP 562), so that what only
needs progress and cancellation (the command line's argument parsing, ``--help``) starts without torch.
"""

from engine.runtime.progress import CancelToken, Progress, ProgressTracker

_LAZY = {"resolve_device": "engine.runtime.device", "available_devices": "engine.runtime.device",
         "parse_dtype": "engine.runtime.dtypes", "dtype_name": "engine.runtime.dtypes"}

__all__ = [*_LAZY, "CancelToken", "Progress", "ProgressTracker"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'engine.runtime' has no attribute {name!r}")
