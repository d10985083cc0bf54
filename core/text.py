"""Formatting shared by every part: sizes, walltimes, job comments, and quoting refused input."""

from __future__ import annotations

import re

_COMMENT_UNSAFE = re.compile(r"[^A-Za-z0-9@._:=/+ -]")

#: how much of a refused value an error message quotes
QUOTE_LIMIT = 64


def quote_prefix(value, limit: int = QUOTE_LIMIT) -> str:
    """``value`` for an error message: its repr, cut to ``limit`` characters (``...`` marks a cut).

    Errors quote at most a short, escaped prefix of what they refuse, so a huge or hostile value
    never comes back whole in a response or a log line.
    """
    if not isinstance(value, str):
        text = repr(value) if isinstance(value, (int, float, bool, type(None))) else f"<{type(value).__name__}>"
        return text[:limit]
    if len(value) > limit:
        return repr(value[:limit]) + "..."
    return repr(value)


def format_bytes(n: int | float | None) -> str:
    """``1234567`` -> ``'1.2 MB'`` (decimal units, as storage systems count)."""
    if n is None:
        return "an unknown size"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # pragma: no cover (the loop always returns)


def format_walltime(minutes: int) -> str:
    """Slurm's ``--time``: ``HH:MM:00`` below a day, ``D-HH:MM:00`` from a day on."""
    hours, minutes = divmod(int(minutes), 60)
    days, hours = divmod(hours, 24)
    return f"{days}-{hours:02d}:{minutes:02d}:00" if days else f"{hours:02d}:{minutes:02d}:00"


def sanitize_comment(text: str, limit: int = 200) -> str:
    """A job comment safe to show anywhere: printable ASCII from a small set, one line, bounded."""
    return _COMMENT_UNSAFE.sub("_", text)[:limit]
