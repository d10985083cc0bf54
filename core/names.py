"""Names the gateway accepts, in one place: partitions, accounts, presets and unix accounts."""

from __future__ import annotations

import re

from .text import quote_prefix

#: partitions, accounts, presets: what schedulers accept and what is safe anywhere
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

#: unix account names (what ``sudo -u`` and ``sbatch`` are given; no '#uid', no options)
UNIX_NAME_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")


def check_name(kind: str, name) -> str:
    """``name`` if it matches :data:`NAME_RE`, else ValueError naming ``kind``."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ValueError(f"{kind} name {quote_prefix(name)} must match {NAME_RE.pattern}")
    return name


def is_unix_name(name) -> bool:
    return isinstance(name, str) and bool(UNIX_NAME_RE.fullmatch(name))
