"""Runtime services: compute-device choice, dtypes, progress reporting and cancellation."""

from engine.runtime.device import resolve_device, available_devices
from engine.runtime.dtypes import parse_dtype, dtype_name
from engine.runtime.progress import CancelToken, Progress, ProgressTracker

__all__ = [
    "resolve_device",
    "available_devices",
    "parse_dtype",
    "dtype_name",
    "CancelToken",
    "Progress",
    "ProgressTracker",
]
