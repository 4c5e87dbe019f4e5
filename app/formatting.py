"""How numbers read in the UI: byte sizes, parameter counts (both the engine's, so the GUI and the
command line agree), durations, dtype mixes."""

from __future__ import annotations

from engine.runtime.formatting import human_bytes, human_count

__all__ = ["format_duration", "human_bytes", "human_count", "main_dtype"]


def format_duration(seconds: float) -> str:
    """``42 s``, ``3:07``, ``1:02:03``; under ten seconds with one decimal."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def main_dtype(counts: dict[str, int]) -> str:
    """The dtype most of a checkpoint's floating-point tensors have (``bf16``); ``fp16/fp32`` when two
    are common; all kinds when it holds no floats."""
    floats = {k: v for k, v in counts.items() if k.startswith(("fp", "bf", "float"))} or counts
    ordered = sorted(floats, key=lambda k: -floats[k])
    return "/".join(ordered[:2]) + ("…" if len(ordered) > 2 else "")
