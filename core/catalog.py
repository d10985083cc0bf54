"""Catalogue models, the DID grammar and the one catalogue error family (pure, shared).

Every catalogue backend returns these models, the REST API serialises them and the Python API
reads them back. Every user-facing catalogue error is a :class:`CatalogError` whose ``status`` is
the HTTP status the REST API answers with and whose message says how to fix the request.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from .text import quote_prefix


class CatalogError(Exception):
    """A user-facing catalogue error; ``status`` is the HTTP status the REST API answers with.

    The class sets the usual status; ``CatalogError(message, status=409)`` sets another one for
    a single answer. The message is for people: it says how to fix the request and quotes at
    most a short prefix of what was refused (:func:`~science_gateway.core.text.quote_prefix`).
    """

    status = 400

    def __init__(self, message: str = "", status: int | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status


class InvalidDID(CatalogError, ValueError):
    """A dataset or request identifier that is malformed; the message says what was wrong."""


class NotFound(CatalogError):
    """The catalogue has no such object (where "no" is not an expected answer: those return None)."""

    status = 404


class InvalidQuery(CatalogError, ValueError):
    """Search input a person must correct; the message says how."""


class ScopeNotAllowed(CatalogError):
    """A scope the user's policy does not let them see."""

    status = 403


class AccessDenied(CatalogError):
    """The catalogue refused this user the operation (its own permissions, not ours)."""

    status = 403


class NotAuthenticated(CatalogError):
    """The catalogue did not accept the user's credentials (e.g. an expired token): log in again."""

    status = 401


class QuotaExceeded(CatalogError):
    """The request would not fit in the user's quota on the notebook's storage."""

    status = 409


class BackendUnavailable(CatalogError):
    """The catalogue service did not answer (in time); trying again later may work."""

    status = 503


class CatalogFailure(CatalogError):
    """The catalogue answered with an error the gateway does not know how to explain better."""

    status = 502


@dataclass(frozen=True)
class SearchQuery:
    """A validated search: a name pattern (``*`` wildcards) and exact-match metadata filters."""

    pattern: str = "*"
    filters: dict[str, str] = field(default_factory=dict)
    limit: int = 50
    page: str | None = None
    #: search this scope only; None means every scope the user may see
    scope: str | None = None
    #: also fetch each result's full metadata and where it is now (False: what the search
    #: itself returns, which for Rucio is one call: size, file count, the filtered metadata)
    details: bool = True
    #: with details: answer as soon as sizes and availability are known; metadata that needs a
    #: slower query (Rucio's free-form keys) may follow, marked ``metadata_pending`` on each
    #: dataset, and the same search again returns it (what the widget does)
    partial: bool = False


def parse_filters(text: str) -> dict[str, str]:
    """``"project=run2024, datatype=RAW"`` -> ``{"project": "run2024", "datatype": "RAW"}``."""
    filters = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise InvalidQuery(f"filter {quote_prefix(part)} must look like key=value")
        filters[key.strip()] = value.strip()
    return filters

# Rucio's default DID grammar: scope and name of letters, digits and ``._-`` (names may hold ``/``
# in some deployments, never ``..``). Backends may be stricter, never looser.
_SCOPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,29}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,249}$")


def parse_did(did: str) -> tuple[str, str]:
    """Split ``scope:name`` and check both parts, raising :class:`InvalidDID` with a usable message."""
    if not isinstance(did, str) or did.count(":") != 1:
        raise InvalidDID(f"dataset id {quote_prefix(did)} must look like 'scope:name'")
    scope, name = did.split(":")
    if not _SCOPE_RE.fullmatch(scope):
        raise InvalidDID(f"scope {quote_prefix(scope)} must be 1-30 letters, digits, '.', '_' or '-'")
    if not _NAME_RE.fullmatch(name) or ".." in name or "//" in name:
        raise InvalidDID(f"name {quote_prefix(name)} must be letters, digits, '.', '_', '-' or '/' (no '..')")
    return scope, name


class ScopedRecord:
    """What every catalogue record of a ``scope`` and a ``name`` (a dataclass) shares: its DID and
    its dict form (the REST API's), with ``did`` added and unknown keys dropped on the way back."""

    @property
    def did(self) -> str:
        return f"{self.scope}:{self.name}"

    def to_dict(self) -> dict:
        return {"did": self.did, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict):
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Dataset(ScopedRecord):
    scope: str
    name: str
    bytes: int | None = None
    files: int | None = None
    metadata: dict = field(default_factory=dict)
    #: where copies are now: "disk" (readable soon), "tape" (needs a recall), or "unknown"
    availability: str = "unknown"
    #: part of the metadata is still being fetched (a ``partial`` search): search again for it
    metadata_pending: bool = False


@dataclass(frozen=True)
class DatasetFile:
    scope: str
    name: str
    bytes: int | None = None

    @property
    def did(self) -> str:
        return f"{self.scope}:{self.name}"

    def to_dict(self) -> dict:
        # its fields are plain values: no deep copy (asdict costs ~10x this, and a dataset can
        # hold 100,000 files)
        return {"did": f"{self.scope}:{self.name}", "scope": self.scope, "name": self.name, "bytes": self.bytes}


@dataclass(frozen=True)
class SearchPage:
    datasets: list[Dataset]
    #: opaque token for the next page, or None on the last page (a backend that cannot tell may
    #: give a full last page a token whose page is empty)
    next: str | None = None

    def to_dict(self) -> dict:
        return {"datasets": [d.to_dict() for d in self.datasets], "next": self.next}

    @classmethod
    def from_dict(cls, d: dict) -> "SearchPage":
        return cls([Dataset.from_dict(x) for x in d["datasets"]], next=d.get("next"))


#: states of a stage-in request, as every backend reports them
IN_PROGRESS = "in_progress"
READY = "ready"
FAILED = "failed"
REQUEST_STATES = (IN_PROGRESS, READY, FAILED)

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_request_id(request_id: str) -> str:
    """Request ids are opaque tokens of letters, digits, '-' and '_'; anything else is refused."""
    if not isinstance(request_id, str) or not _REQUEST_ID_RE.fullmatch(request_id):
        raise InvalidDID(f"request id {quote_prefix(request_id)} must be 1-64 letters, digits, '-' or '_'")
    return request_id


@dataclass(frozen=True)
class FailedFile:
    did: str
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class StageRequest:
    """One request to make a dataset readable from the notebook, and how far it got.

    ``files_done + files_in_flight + files_failed == files_total``; ``paths`` are the local paths
    of the files that are ready now (all of them once ``state`` is ``ready``).
    """

    id: str
    did: str
    state: str
    files_total: int = 0
    files_done: int = 0
    files_in_flight: int = 0
    files_failed: int = 0
    bytes_total: int | None = None
    #: the only copies were on tape or nearline storage: the files are being recalled
    tape_recall: bool = False
    #: one sentence a person can read, e.g. "recalling from tape: 2 of 4 files ready"
    message: str = ""
    failed: list[FailedFile] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    created_at: str | None = None
    expires_at: str | None = None
    #: set on the answer to a stage call that found an existing request for the same dataset
    reused: bool = False
    #: non-empty while the catalogue does not answer: why this status is not fresh (it is the
    #: last one the catalogue gave, and updates by itself once the catalogue answers again)
    notice: str = ""

    @property
    def done(self) -> bool:
        return self.state != IN_PROGRESS

    def to_dict(self) -> dict:
        d = asdict(self)
        d["failed"] = [f.to_dict() for f in self.failed]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "StageRequest":
        d = dict(d)
        d["failed"] = [FailedFile(**f) for f in d.get("failed", [])]
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def progress_message(state: str, done: int, total: int, in_flight: int, failed: int, tape: bool, error: str | None = None) -> str:
    """The one sentence shown for a request (pure, shared by every backend)."""
    if state == READY:
        return f"ready: {total} of {total} files readable"
    if state == FAILED:
        reason = f": {error}" if error else ""
        return f"failed: {failed} of {total} files could not be copied{reason}"
    verb = "recalling from tape" if tape else "copying"
    text = f"{verb}: {done} of {total} files ready"
    if failed:
        text += f", {failed} failed"
    return text
