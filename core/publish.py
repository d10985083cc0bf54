"""Publishing results: what a publish holds, checked, and the provenance the gateway records (pure).

A publish uploads files a notebook produced to a catalogue's storage and registers them as one
dataset in the user's own scope, with metadata the user gives (``key=value``, so the gateway's
search filters find it again) and provenance the gateway adds under keys starting with
:data:`PROVENANCE_PREFIX`: the input dataset ids, the notebook and its parameters, the executed
notebook, the job ids, the environment and the user's identity.

Every check here raises :class:`InvalidPublish` (a 400) with a message that says what is
allowed and quotes at most a short prefix of what was refused. :func:`resolve_user_file` keeps
every path inside the user's root (their home or Jupyter root): no ``..``, no symlink out, no
absolute path elsewhere.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import sys
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .batch import ParameterError, check_parameters as check_notebook_parameters
from .catalog import CatalogError, InvalidDID, ScopedRecord, parse_did
from .text import quote_prefix

#: metadata keys the user gives: a letter, then letters, digits and '_' (no '.': Rucio reads
#: ``key.gte`` as an operator; no '-': not every metadata store takes it)
METADATA_KEY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
#: metadata values: what a search filter can match exactly (no '*', no spaces, no quotes)
METADATA_VALUE_RE = re.compile(r"^[A-Za-z0-9._:/+-]{1,250}$")
#: provenance keys the gateway writes start with this; a user's key may not
PROVENANCE_PREFIX = "sg_"
#: keys that are a catalogue's own bookkeeping (Rucio's DID columns), never user metadata
RESERVED_KEYS = frozenset({
    "scope", "name", "account", "did_type", "type", "is_open", "monotonic", "hidden", "obsolete",
    "complete", "availability", "suppressed", "bytes", "length", "md5", "adler32", "guid", "events",
    "expired_at", "created_at", "updated_at", "accessed_at", "closed_at", "deleted_at", "eol_at",
    "purge_replicas", "transient", "is_archive", "constituent", "access_cnt", "lifetime", "rse",
})
MAX_METADATA_KEYS = 50
MAX_FILES = 500
MAX_INPUTS = 1000
MAX_JOBS = 1000
MAX_PATH_LENGTH = 1024
MAX_ENVIRONMENT = 2000
#: a file's name in the catalogue: the dataset name, '.', its path with '/' as '.'
FILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,249}$")
#: job ids of Slurm (``123``, ``123_4``), HTCondor (``123.0``), Kubernetes (pod names)
JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
#: package names and versions in an environment record
_PACKAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!-]{0,63}$")
_USER_RE = re.compile(r"^[A-Za-z0-9@._:+-]{1,128}$")


class InvalidPublish(CatalogError, ValueError):
    """A publish (or an RO-Crate export) a person must correct; the message says how."""


def check_dataset_name(name) -> str:
    """A dataset name of the DID grammar, without '/' (files are named after it)."""
    if not isinstance(name, str) or "/" in name:
        raise InvalidPublish(f"dataset name {quote_prefix(name)} must be letters, digits, '.', '_' or '-'")
    try:
        parse_did(f"x:{name}")
    except InvalidDID:
        raise InvalidPublish(f"dataset name {quote_prefix(name)} must be 1-200 letters, digits, '.', '_' or '-' (no '..')") from None
    if len(name) > 200:
        raise InvalidPublish(f"dataset name {quote_prefix(name)} must be at most 200 characters")
    return name


def check_metadata(metadata) -> dict[str, str]:
    """The user's metadata: at most :data:`MAX_METADATA_KEYS` ``key: value`` text pairs a search
    filter can find (``"key=value, key=value"`` text is taken too)."""
    if metadata is None or metadata == "":
        return {}
    if isinstance(metadata, str):
        pairs = {}
        for part in filter(None, (p.strip() for p in metadata.split(","))):
            key, sep, value = part.partition("=")
            if not sep:
                raise InvalidPublish(f"metadata {quote_prefix(part)} must look like key=value")
            pairs[key.strip()] = value.strip()
        metadata = pairs
    if not isinstance(metadata, dict):
        raise InvalidPublish(f"metadata {quote_prefix(metadata)} must be an object of key: value text")
    if len(metadata) > MAX_METADATA_KEYS:
        raise InvalidPublish(f"at most {MAX_METADATA_KEYS} metadata keys, not {len(metadata)}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not METADATA_KEY_RE.fullmatch(key):
            raise InvalidPublish(
                f"metadata key {quote_prefix(key)} must start with a letter and hold letters, digits or '_' (at most 64)"
            )
        if key.startswith(PROVENANCE_PREFIX) or key.lower() in RESERVED_KEYS:
            raise InvalidPublish(
                f"metadata key {quote_prefix(key)} is the gateway's or the catalogue's own; choose another name"
            )
        if not isinstance(value, str) or not METADATA_VALUE_RE.fullmatch(value):
            raise InvalidPublish(
                f"value {quote_prefix(value)} for {quote_prefix(key)} must be 1-250 letters, digits or '._:/+-' "
                "(what a search filter can match)"
            )
    return dict(metadata)


def check_inputs(inputs) -> list[str]:
    """Input dataset ids (``scope:name``), each checked against the DID grammar."""
    inputs = _list_of("inputs", inputs, MAX_INPUTS)
    for did in inputs:
        try:
            parse_did(did)
        except InvalidDID as e:
            raise InvalidPublish(f"input {e}") from None
    return list(dict.fromkeys(inputs))


def check_jobs(jobs) -> list[str]:
    jobs = _list_of("jobs", jobs, MAX_JOBS)
    for job in jobs:
        if not isinstance(job, str) or not JOB_ID_RE.fullmatch(job):
            raise InvalidPublish(f"job id {quote_prefix(job)} must be letters, digits, '_', '.', ':' or '-' (e.g. 1234 or 1234_2)")
    return jobs


def check_parameters(parameters) -> dict:
    """Notebook parameters, checked as a notebook job takes them (:func:`.batch.check_parameters`):
    the provenance of a published run holds the very parameters the run was given."""
    try:
        return check_notebook_parameters(parameters)
    except ParameterError as e:
        raise InvalidPublish(str(e)) from None


def check_environment(environment) -> dict[str, str]:
    """``{package: version}`` (``python`` included), bounded."""
    if environment is None:
        return {}
    if not isinstance(environment, dict) or len(environment) > MAX_ENVIRONMENT:
        raise InvalidPublish(f"environment must be an object of at most {MAX_ENVIRONMENT} package: version pairs")
    for name, version in environment.items():
        if not isinstance(name, str) or not _PACKAGE_RE.fullmatch(name):
            raise InvalidPublish(f"package name {quote_prefix(name)} in the environment is not a package name")
        if not isinstance(version, str) or not _VERSION_RE.fullmatch(version):
            raise InvalidPublish(f"version {quote_prefix(version)} of {name!r} is not a version")
    return dict(environment)


def _list_of(what: str, value, limit: int) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)):
        raise InvalidPublish(f"{what} must be a list, not {quote_prefix(value)}")
    if len(value) > limit:
        raise InvalidPublish(f"at most {limit} {what}, not {len(value)}")
    return list(value)


def current_environment() -> dict[str, str]:
    """This interpreter's Python version and installed distributions (``{name: version}``)."""
    from importlib import metadata

    found = {"python": "{}.{}.{}".format(*sys.version_info[:3])}
    for dist in metadata.distributions():
        name, version = dist.metadata.get("Name"), dist.version
        if name and version and _PACKAGE_RE.fullmatch(name) and _VERSION_RE.fullmatch(version):
            found.setdefault(name.lower(), version)
    return dict(sorted(found.items()))


# -- paths the user gives -------------------------------------------------------------------------


def resolve_user_file(root: str, path, what: str = "file") -> tuple[Path, str]:
    """``(real path, path relative to root)`` of a regular file inside ``root``.

    Refused with :class:`InvalidPublish`: a ``..`` component, an absolute path outside ``root``,
    a symlink (anywhere on the way) that leads out of it, a path that is not a regular file.
    """
    if not isinstance(path, str) or not path or len(path) > MAX_PATH_LENGTH or "\x00" in path:
        raise InvalidPublish(f"{what} path {quote_prefix(path)} must be a path of at most {MAX_PATH_LENGTH} characters")
    if ".." in Path(path).parts:
        raise InvalidPublish(f"{what} path {quote_prefix(path)} may not hold '..': give a path inside your home")
    real_root = os.path.realpath(root)
    joined = path if os.path.isabs(path) else os.path.join(real_root, path)
    joined = os.path.normpath(joined)
    if os.path.commonpath([real_root, joined]) != real_root and os.path.commonpath([os.path.normpath(root), joined]) != os.path.normpath(root):
        raise InvalidPublish(f"{what} path {quote_prefix(path)} is outside your home ({root}): only files under it can be used")
    real = os.path.realpath(joined)
    if os.path.commonpath([real_root, real]) != real_root:
        raise InvalidPublish(f"{what} path {quote_prefix(path)} leads outside your home ({root}) through a link: refused")
    if not os.path.isfile(real):
        raise InvalidPublish(f"{what} {quote_prefix(path)} is not a file in your home ({root})")
    return Path(real), os.path.relpath(real, real_root)


def file_did_name(dataset: str, relative: str) -> str:
    """The catalogue name of a published file: ``<dataset>.<its path, '/' as '.'>``."""
    name = f"{dataset}.{relative.replace(os.sep, '.')}"
    if not FILE_NAME_RE.fullmatch(name) or ".." in name:
        raise InvalidPublish(
            f"file {quote_prefix(relative)} cannot be named in the catalogue: its path must be letters, digits, "
            "'.', '_', '-' or '/' (rename it)"
        )
    return name


def checksums(path: Path) -> dict:
    """``{"bytes", "md5", "adler32", "sha256"}`` of a file (read once)."""
    md5, sha256, adler, size = hashlib.md5(), hashlib.sha256(), 1, 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            md5.update(chunk)
            sha256.update(chunk)
            adler = zlib.adler32(chunk, adler)
            size += len(chunk)
    return {"bytes": size, "md5": md5.hexdigest(), "adler32": f"{adler & 0xffffffff:08x}", "sha256": sha256.hexdigest()}


# -- the models -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Provenance:
    """Where published results came from: what the gateway records next to the user's metadata."""

    inputs: list[str] = field(default_factory=list)
    notebook: str | None = None
    executed_notebook: str | None = None
    parameters: dict = field(default_factory=dict)
    jobs: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    #: who published: ``{"name": <gateway user>, "account": <catalogue account>}``
    user: dict[str, str] = field(default_factory=dict)
    published_at: str | None = None

    def to_metadata(self) -> dict:
        """The provenance as catalogue metadata (keys start with :data:`PROVENANCE_PREFIX`); the
        user's name and the notebook stay plain text, so a search filter finds them."""
        meta = {
            "sg_inputs": list(self.inputs),
            "sg_parameters": dict(self.parameters),
            "sg_jobs": list(self.jobs),
            "sg_environment": dict(self.environment),
            "sg_user": dict(self.user),
        }
        if self.user.get("name"):
            meta["sg_published_by"] = self.user["name"]
        for key, value in (("sg_notebook", self.notebook), ("sg_executed_notebook", self.executed_notebook),
                           ("sg_published_at", self.published_at)):
            if value:
                meta[key] = value
        return meta

    @classmethod
    def from_metadata(cls, meta: dict) -> "Provenance":
        return cls(
            inputs=list(meta.get("sg_inputs") or []), notebook=meta.get("sg_notebook"),
            executed_notebook=meta.get("sg_executed_notebook"), parameters=dict(meta.get("sg_parameters") or {}),
            jobs=list(meta.get("sg_jobs") or []), environment=dict(meta.get("sg_environment") or {}),
            user=dict(meta.get("sg_user") or {}), published_at=meta.get("sg_published_at"),
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Provenance":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def check_user(user) -> dict[str, str]:
    if not isinstance(user, dict) or not all(
        isinstance(k, str) and k in ("name", "account") and isinstance(v, str) and _USER_RE.fullmatch(v)
        for k, v in user.items()
    ):
        raise InvalidPublish(f"user {quote_prefix(user)} must be {{'name': ..., 'account': ...}} of short text")
    return dict(user)


def utc_timestamp() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class FileChecksum(ScopedRecord):
    """One file of a dataset with what the catalogue knows of its content."""

    scope: str
    name: str
    bytes: int | None = None
    md5: str | None = None
    adler32: str | None = None


@dataclass(frozen=True)
class PublishedDataset:
    """What a publish made: the dataset, where its files went, its metadata and provenance."""

    scope: str
    name: str
    rse: str
    files: list[FileChecksum]
    #: the user's metadata (without the provenance keys)
    metadata: dict
    provenance: Provenance
    #: the local paths the files came from, relative to the user's root, in ``files`` order
    sources: list[str] = field(default_factory=list)

    @property
    def did(self) -> str:
        return f"{self.scope}:{self.name}"

    def to_dict(self) -> dict:
        return {
            "did": self.did, "scope": self.scope, "name": self.name, "rse": self.rse,
            "files": [f.to_dict() for f in self.files], "metadata": dict(self.metadata),
            "provenance": self.provenance.to_dict(), "sources": list(self.sources),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "PublishedDataset":
        return cls(
            scope=d["scope"], name=d["name"], rse=d.get("rse", ""),
            files=[FileChecksum.from_dict(f) for f in d.get("files", [])], metadata=dict(d.get("metadata") or {}),
            provenance=Provenance.from_dict(d.get("provenance") or {}), sources=list(d.get("sources") or []),
        )


def resolve_user_dest(root: str, path, suffix: str = "") -> tuple[Path, str]:
    """``(path, relative to root)`` for a new file or folder inside ``root``: its parent must be
    a folder inside ``root`` (links followed), it must not exist yet, ``..`` is refused."""
    if not isinstance(path, str) or not path or len(path) > MAX_PATH_LENGTH or "\x00" in path:
        raise InvalidPublish(f"destination {quote_prefix(path)} must be a path of at most {MAX_PATH_LENGTH} characters")
    if ".." in Path(path).parts:
        raise InvalidPublish(f"destination {quote_prefix(path)} may not hold '..': give a path inside your home")
    if suffix and not path.endswith(suffix):
        path += suffix
    real_root = os.path.realpath(root)
    joined = os.path.normpath(path if os.path.isabs(path) else os.path.join(real_root, path))
    parent = os.path.realpath(os.path.dirname(joined))
    target = os.path.join(parent, os.path.basename(joined))
    if os.path.commonpath([real_root, parent]) != real_root or target == real_root:
        raise InvalidPublish(f"destination {quote_prefix(path)} is outside your home ({root}): choose a folder under it")
    if not os.path.isdir(parent):
        raise InvalidPublish(f"the folder of destination {quote_prefix(path)} does not exist")
    if os.path.lexists(target):
        raise InvalidPublish(f"destination {quote_prefix(path)} exists already: choose a new name", status=409)
    return Path(target), os.path.relpath(target, real_root)
