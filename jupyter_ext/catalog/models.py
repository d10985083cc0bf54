"""The data models every catalogue backend returns, and the REST API and Python API serialise."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

# Rucio's default DID grammar: scope and name of letters, digits and ``._-`` (names may hold ``/``
# in some deployments, never ``..``). Backends may be stricter, never looser.
_SCOPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,29}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,249}$")


class InvalidDID(ValueError):
    """A dataset identifier that is not ``scope:name``; the message says what was wrong."""


def parse_did(did: str) -> tuple[str, str]:
    """Split ``scope:name`` and check both parts, raising :class:`InvalidDID` with a usable message."""
    if not isinstance(did, str) or did.count(":") != 1:
        raise InvalidDID(f"dataset id {did!r} must look like 'scope:name'")
    scope, name = did.split(":")
    if not _SCOPE_RE.match(scope):
        raise InvalidDID(f"scope {scope!r} must be 1-30 letters, digits, '.', '_' or '-'")
    if not _NAME_RE.match(name) or ".." in name or "//" in name:
        raise InvalidDID(f"name {name!r} must be letters, digits, '.', '_', '-' or '/' (no '..')")
    return scope, name


@dataclass(frozen=True)
class Dataset:
    scope: str
    name: str
    bytes: int | None = None
    files: int | None = None
    metadata: dict = field(default_factory=dict)
    #: where copies are now: "disk" (readable soon), "tape" (needs a recall), or "unknown"
    availability: str = "unknown"

    @property
    def did(self) -> str:
        return f"{self.scope}:{self.name}"

    def to_dict(self) -> dict:
        return {"did": self.did, **asdict(self)}


@dataclass(frozen=True)
class DatasetFile:
    scope: str
    name: str
    bytes: int | None = None

    @property
    def did(self) -> str:
        return f"{self.scope}:{self.name}"

    def to_dict(self) -> dict:
        return {"did": self.did, **asdict(self)}


@dataclass(frozen=True)
class SearchPage:
    datasets: list[Dataset]
    #: opaque token for the next page, or None on the last page
    next: str | None = None

    def to_dict(self) -> dict:
        return {"datasets": [d.to_dict() for d in self.datasets], "next": self.next}
