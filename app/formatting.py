"""How numbers read in the UI: byte sizes, parameter counts, durations, dtype mixes."""

from __future__ import annotations


def human_bytes(n: float) -> str:
    """``512 B``, ``3.4 MB``, ``14.2 GB`` (decimal units, as model hubs write them)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def human_count(n: int) -> str:
    """``950``, ``12.3K``, ``6.74M``, ``7.24B`` parameters."""
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            value = n / div
            return f"{value:.3g}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return str(n)


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
