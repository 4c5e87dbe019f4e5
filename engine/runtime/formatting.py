"""How sizes and counts read for people, the same in the GUI, the command line and engine messages.

Standard library only: the command line's ``--help`` imports it and must start without torch.
"""

from __future__ import annotations


def human_bytes(n: float) -> str:
    """``512 B``, ``3.4 MB``, ``14.2 GB`` (decimal units, as model hubs write them)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def human_count(n: int) -> str:
    """``950``, ``12.3K``, ``6.74M``, ``7.24B`` (parameters, examples)."""
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            value = n / div
            return f"{value:.3g}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return str(n)
