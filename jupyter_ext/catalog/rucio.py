"""The Rucio catalogue backend, on ``rucio-clients``.

A stage-in request is a Rucio replication rule of the user's account to the storage element the
notebook mounts (:attr:`RucioCatalog.rse`). Rucio is the source of truth: the requests a user sees
are their account's rules on that RSE, so they outlive the kernel and the server, and another
account's rules are never visible or cancellable.

Calls to Rucio, per operation (none grows with the number of files):

- search: one ``list_dids`` with a limit, then for the page one bulk dataset replica call
  (availability), one bulk call for the DID columns (sizes, built-in metadata) and one per
  free-form metadata plugin (by default JSON); a partial search waits only for the first (the RSE
  list, for tape or disk, is fetched once).
- stage: one rule lookup, one DID lookup, one usage/quota call, one dataset replica call, one
  ``add_replication_rule``.
- status of all requests: one ``list_replication_rules`` per refresh (at most every
  :attr:`RucioCatalog.status_refresh_seconds`), plus once per new request its file list, and once
  per change of a request's failed-file count its locks. Ready files are found by looking at the
  mounted storage, so progress costs no per-file calls.

- publish: one ``add_dataset`` (with its rule on :attr:`RucioCatalog.publish_rse`; Rucio refuses
  it for a scope that is not the account's, before anything is uploaded), rucio-clients' upload
  of the files (a few calls per file, attached to the dataset), one ``set_metadata_bulk`` (the
  user's keys and the provenance, in the free-form JSON plugin), one ``close``, one
  ``list_files`` (the checksums Rucio recorded).

Authentication: ``userpass`` (the local test stack) or ``oidc``: a bearer token read from
:attr:`RucioCatalog.token_file` (by default ``$BEARER_TOKEN_FILE``, the WLCG bearer token discovery
convention, which the gateway's token keeper keeps fresh), for Rucio servers that accept OIDC
tokens. The token is re-read whenever the file changes; Rucio maps it to the user's own account
(unless :attr:`RucioCatalog.account` says which, it is asked once with ``whoami``), and a token it
refuses is a 401 that says to log in again, never rucio-clients' interactive re-login.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import hashlib
import os
import re
import threading
import time
from dataclasses import replace
from random import choice
from urllib.parse import quote_plus

from traitlets import Enum, Float, Integer, List, Unicode, default

from ...core.catalog import (
    FAILED,
    IN_PROGRESS,
    READY,
    AccessDenied,
    BackendUnavailable,
    CatalogError,
    CatalogFailure,
    Dataset,
    DatasetFile,
    FailedFile,
    InvalidQuery,
    NotAuthenticated,
    NotFound,
    QuotaExceeded,
    SearchPage,
    SearchQuery,
    StageRequest,
    progress_message,
)
from ...core.clock import utcnow_datetime
from ...core.publish import FileChecksum, Provenance, PublishedDataset
from ...core.text import format_bytes, quote_prefix
from .base import CatalogBackend

#: DID columns that are bookkeeping, not metadata a person searches by
_BOOKKEEPING = {
    "scope", "name", "account", "did_type", "is_open", "monotonic", "hidden", "obsolete", "complete",
    "is_new", "availability", "suppressed", "bytes", "length", "md5", "adler32", "expired_at",
    "purge_replicas", "deleted_at", "created_at", "updated_at", "accessed_at", "closed_at", "eol_at",
    "access_cnt", "constituent", "is_archive", "transient", "events", "guid",
}
TAPE_MARK = "tape-recall"


# -- pure helpers -------------------------------------------------------------------------------


def rucio_filters(query: SearchQuery) -> dict:
    """The ``list_dids`` filter for a query: the name pattern and exact-match metadata."""
    return {"name": query.pattern, **query.filters}


def encode_page(scope_index: int, offset: int) -> str:
    return f"{scope_index}.{offset}"


def _ascii_number(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 9


def decode_page(token: str | None, n_scopes: int, max_offset: int) -> tuple[int, int]:
    if not token:
        return 0, 0
    first, sep, second = token.partition(".")
    if not (sep and _ascii_number(first) and _ascii_number(second)) or int(first) >= n_scopes:
        raise InvalidQuery(f"page token {quote_prefix(token)} was not issued by this catalogue")
    if int(second) > max_offset:
        raise InvalidQuery(f"results past the first {max_offset} cannot be paged to; add filters to narrow the search")
    return int(first), int(second)


def safe_join(mount_path: str, relative: str) -> str | None:
    """``mount_path/relative``, or None when ``relative`` would climb out (``..``, symlinks)."""
    rest = relative.lstrip("/")
    parts = rest.split("/")
    if not rest or "\x00" in rest or any(p in ("", ".", "..") for p in parts):
        return None
    path = os.path.join(mount_path, *parts)
    mount = os.path.realpath(mount_path)
    if os.path.commonpath([mount, os.path.realpath(path)]) != mount:
        return None
    return path


def pfn_to_path(pfn: str, pfn_prefix: str, mount_path: str) -> str | None:
    """The local path of ``pfn`` under ``mount_path``, or None when it is not safely inside it.

    ``pfn_prefix`` is the part of the PFN that corresponds to ``mount_path``. PFNs that do not
    start with it, or whose rest climbs out of the mount (``..``, symlinks), map to nothing.
    """
    if not pfn_prefix or not pfn.startswith(pfn_prefix):
        return None
    return safe_join(mount_path, pfn[len(pfn_prefix):])


#: Rucio's built-in deterministic lfn2pfn algorithms, computed here without a Rucio config file
LOCAL_LFN2PFN = ("hash", "identity")


def deterministic_path(scope: str, name: str, algorithm: str = "hash") -> str:
    """The path of a file under a deterministic RSE's prefix (Rucio's ``hash``/``identity``)."""
    directory = scope.replace(".", "/") if scope.startswith(("user", "group")) else scope
    if algorithm == "identity":
        return f"{directory}/{name}"
    digest = hashlib.md5(f"{scope}:{name}".encode()).hexdigest()
    return f"{directory}/{digest[0:2]}/{digest[2:4]}/{name}"


def is_live(rule: dict, now: datetime.datetime) -> bool:
    """Rucio deletes a rule softly (it expires now and a daemon removes it later)."""
    expires = rule.get("expires_at")
    if isinstance(expires, str):
        expires = datetime.datetime.fromisoformat(expires)
    return expires is None or expires.replace(tzinfo=None) > now


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def rucio_date(value: datetime.datetime) -> str:
    """The RFC 1123 date Rucio's rule filters expect (``created_after``, ``updated_after``)."""
    return f"{_DAYS[value.weekday()]}, {value.day:02d} {_MONTHS[value.month - 1]} {value:%Y %H:%M:%S} UTC"


def _iso(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        return value.replace(tzinfo=value.tzinfo or datetime.timezone.utc).isoformat()
    return str(value)


def _jsonable(value):
    return _iso(value) if isinstance(value, datetime.datetime) else value


def matched_metadata(filters: dict[str, str]) -> dict[str, str]:
    """What a result is known to hold because the search matched it: the exact-match filters
    (a key with an operator suffix, ``run_number.gte``, says nothing exact)."""
    return {k: v for k, v in filters.items() if "." not in k}


def merged_metadata(filters: dict[str, str], did_columns: dict | None, freeform: dict | None) -> dict:
    """A result's metadata as Rucio's ``plugin=ALL`` gives it (the DID columns, then the
    free-form plugins over them), starting from what the filters matched (pure)."""
    return {**matched_metadata(filters), **(did_columns or {}), **(freeform or {})}


def _first_known(key: str, *sources: dict):
    return next((found[key] for found in sources if found.get(key) is not None), None)


def dataset_from_rucio(did: dict, meta: dict | None, replicas: list[dict] | None, rse_types: dict[str, str],
                       metadata_pending: bool = False) -> Dataset:
    """One search result from ``list_dids(long=True)``, bulk metadata and dataset replicas
    (``replicas`` None: not looked up, availability "unknown"). The size and file count come from
    the first that has them: list_dids (not after a free-form filter: Rucio's JSON plugin returns
    names only), the DID columns, a dataset replica (which counts the whole dataset)."""
    meta = meta or {}
    replicas = replicas or []
    kinds = {rse_types.get(r["rse"], "DISK") for r in replicas if r.get("state") == "AVAILABLE"}
    if "DISK" in kinds:
        availability = "disk"
    elif kinds:
        availability = "tape"
    else:
        availability = "unknown"
    return Dataset(
        scope=did["scope"],
        name=did["name"],
        bytes=_first_known("bytes", did, meta, *replicas),
        files=_first_known("length", did, meta, *replicas),
        metadata={k: _jsonable(v) for k, v in meta.items() if v is not None and k not in _BOOKKEEPING},
        availability=availability,
        metadata_pending=metadata_pending,
    )


def request_from_rule(rule: dict, files: list[dict], ready_paths: list[str], failed: list[FailedFile]) -> StageRequest:
    """A stage-in request from a rule (its lock counters), its files and what is on the mount."""
    ok, repl, stuck = rule["locks_ok_cnt"], rule["locks_replicating_cnt"], rule["locks_stuck_cnt"]
    total = max(ok + repl + stuck, len(files))
    if rule["state"] == "OK":
        state = READY
    elif rule["state"] in ("STUCK", "SUSPENDED") and not repl:
        state = FAILED
    else:
        state = IN_PROGRESS
    done = total if state == READY else ok
    tape = TAPE_MARK in (rule.get("comments") or "")
    error = rule.get("error")
    if state == FAILED and not failed and error:
        failed = [FailedFile(f"{rule['scope']}:{rule['name']}", error)]
    return StageRequest(
        id=rule["id"],
        did=f"{rule['scope']}:{rule['name']}",
        state=state,
        files_total=total,
        files_done=done,
        files_in_flight=repl if state != READY else 0,
        files_failed=stuck if state != READY else 0,
        bytes_total=rule.get("bytes") or sum(f.get("bytes") or 0 for f in files) or None,
        tape_recall=tape,
        message=progress_message(state, done, total, repl, stuck, tape, error),
        failed=failed,
        paths=ready_paths,
        created_at=_iso(rule.get("created_at")),
        expires_at=_iso(rule.get("expires_at")),
    )


#: how rucio-clients describes an HTTP error answer that carries no Rucio exception
_SERVER_ERROR = re.compile(r"http status code: (5[0-9][0-9])")


def _detail(error: Exception) -> str:
    """What Rucio said, on one line and short (never a traceback, never a whole payload)."""
    text = " ".join(str(a) for a in getattr(error, "args", ()) if a) or type(error).__name__
    return quote_prefix(" ".join(text.split()), 160)


def rucio_error(error: Exception, what: str, account: str, auth_type: str, rse: str) -> CatalogError:
    """The catalogue error for an exception rucio-clients raised during ``what`` (pure).

    Permissions become 403, credentials 401 (log in again), missing objects 404, refused rules
    409, a misconfigured storage element and anything else 502 "the catalogue answered ...", a
    server that is down or busy 503. The message quotes what Rucio said, cut short.
    """
    from rucio.common import exception as rx

    said = _detail(error)
    if isinstance(error, (rx.CannotAuthenticate, rx.CannotAuthorize, rx.NoAuthInformation)):
        if auth_type == "oidc":
            whose = f" for account {account!r}" if account else ""
            return NotAuthenticated(
                f"Rucio did not accept your token{whose} ({what}): your token expired "
                "or is not valid for Rucio; log in to the gateway again (open /hub/home) to get a fresh one"
            )
        return NotAuthenticated(
            f"Rucio refused the {auth_type} credentials of account {account!r} ({what}); "
            "ask the gateway admin to check RucioCatalog.username/password"
        )
    if isinstance(error, (rx.AccessDenied, rx.ScopeAccessDenied, rx.RSEAccessDenied)):
        return AccessDenied(
            f"Rucio does not let account {account!r} do this ({what}): {said}; ask the Rucio admins of "
            "your experiment for the permission"
        )
    if isinstance(error, (rx.DataIdentifierNotFound, rx.RuleNotFound, rx.ScopeNotFound, rx.AccountNotFound)):
        return NotFound(f"Rucio has no such object ({what}): {said}")
    if isinstance(error, (rx.RSENotFound, rx.InvalidRSEExpression, rx.RSEProtocolNotSupported, rx.RSEWriteBlocked)):
        return CatalogFailure(
            f"the catalogue answered {what} about storage element {rse!r} with: {said}; the gateway's "
            "RucioCatalog.rse setting may be wrong or the RSE is blocked: tell the gateway admin"
        )
    if isinstance(error, (rx.InsufficientAccountLimit, rx.RSEOverQuota)):
        return QuotaExceeded(
            f"Rucio refused the request for account {account!r} on {rse!r}: not enough quota ({said}); "
            "cancel requests you no longer need or ask for more quota"
        )
    if isinstance(error, (rx.Duplicate, rx.DuplicateRule, rx.DuplicateContent, rx.DataIdentifierAlreadyExists)):
        return CatalogError(f"Rucio already has this ({what}): {said}; reload your requests", status=409)
    if isinstance(error, (rx.InvalidReplicationRule, rx.InsufficientTargetRSEs, rx.InvalidRuleWeight,
                          rx.StagingAreaRuleRequiresLifetime, rx.ManualRuleApprovalBlocked,
                          rx.ReplicationRuleCreationTemporaryFailed, rx.RuleReplaceFailed)):
        return CatalogError(f"Rucio refused the replication rule ({what}): {said}", status=409)
    if isinstance(error, rx.ServerConnectionException):  # rucio-clients' retries all failed to connect
        return BackendUnavailable(f"cannot reach Rucio ({what}): the connection failed; try again later")
    if isinstance(error, (rx.ServiceUnavailable, rx.ResourceTemporaryUnavailable, rx.DatabaseException)):
        return BackendUnavailable(f"Rucio is unavailable ({what}): {said}; try again later")
    server_error = _SERVER_ERROR.search(said) if type(error) is rx.RucioException else None
    if server_error:
        # rucio-clients' words for an HTTP error without Rucio's error body: the server (or a
        # proxy in front of it) failed, not the request
        return BackendUnavailable(
            f"Rucio answered {what} with HTTP {server_error.group(1)} (a server error, no details); try again later"
        )
    return CatalogFailure(f"the catalogue answered {what} with {type(error).__name__}: {said}")


@functools.cache
def bearer_token_client():
    """rucio-clients' ``Client`` for a bearer token that someone else keeps fresh (the token keeper).

    On any HTTP 401 (Rucio answers a refused token and a refused permission, ``AccessDenied``,
    both with 401) rucio-clients' own ``Client`` logs in again: in oidc mode it starts its
    interactive login, printing a URL and waiting for a code on standard input, which in a Jupyter
    server hangs or fails an executor thread, and then sends the request again. This one sends each
    request once and raises what Rucio said (``CannotAuthenticate``: a 401 "log in again" for the
    user, ``AccessDenied``: a 403, see :func:`rucio_error`).
    """
    from rucio.client import Client

    class BearerTokenClient(Client):
        def _send_request(self, *args, **kwargs):
            # rucio-clients' own flag for "no re-login on a 401": the answer comes back as it is
            kwargs["get_token"] = True
            return super()._send_request(*args, **kwargs)

    return BearerTokenClient


class BulkCache:
    """Per-dataset answers of one kind of bulk call, kept ``max_age`` seconds, fetched for a whole
    page at once; a fetch on its way is shared by every search that needs the same datasets.

    ``fetch(keys)`` returns ``{key: value}`` (a key it leaves out gets ``missing``); ``max_age()``
    is read at each look-up.
    """

    def __init__(self, fetch, max_age, missing=None, log=None, limit: int = 10000):
        self.fetch, self.max_age, self.missing, self.log, self.limit = fetch, max_age, missing, log, limit
        self.values = {}  # key -> (monotonic time, value)
        self.fetches = {}  # key -> the task fetching it

    def fresh(self, key) -> bool:
        return key in self.values and time.monotonic() - self.values[key][0] <= self.max_age()

    def get(self, key, default=None):
        return self.values[key][1] if self.fresh(key) else default

    def start(self, keys) -> None:
        """One task fetching those ``keys`` neither fresh nor on their way (none: no task)."""
        todo = [k for k in dict.fromkeys(keys) if k not in self.fetches and not self.fresh(k)]
        if not todo:
            return
        task = asyncio.ensure_future(self._run(todo))
        for key in todo:
            self.fetches[key] = task

        def done(task):
            for key in todo:
                if self.fetches.get(key) is task:
                    del self.fetches[key]
            if not task.cancelled() and task.exception() is not None and self.log is not None:
                # retrieved here: nobody may await a fetch a partial search started
                self.log.debug("a bulk fetch for %d datasets failed: %s", len(todo), task.exception())

        task.add_done_callback(done)

    async def _run(self, keys) -> None:
        found = await self.fetch(keys)
        now = time.monotonic()
        if len(self.values) > self.limit:
            self.values.clear()
        for key in keys:
            self.values[key] = (now, found.get(key, self.missing))

    async def wait(self, keys) -> None:
        """Until ``keys`` are fetched (started first when needed); a failed fetch raises here."""
        self.start(keys)
        fetches = {self.fetches[k] for k in keys if k in self.fetches}
        if fetches:
            await asyncio.gather(*(asyncio.shield(f) for f in fetches))

    def clear(self) -> None:
        for task in set(self.fetches.values()):
            task.cancel()
        self.fetches.clear()
        self.values.clear()


# -- the backend --------------------------------------------------------------------------------


class RucioCatalog(CatalogBackend):
    """Search a Rucio instance and stage datasets to the storage element the notebook mounts."""

    rucio_host = Unicode(
        help="URL of the Rucio server, e.g. https://rucio.example.org. Defaults to $RUCIO_HOST."
    ).tag(config=True)

    auth_host = Unicode(
        help="URL of the Rucio authentication server. Defaults to rucio_host."
    ).tag(config=True)

    account = Unicode(
        help="""The Rucio account the user's requests belong to. Defaults to $RUCIO_ACCOUNT; else, with
        auth_type 'oidc', the account Rucio maps the user's token to (its default account for the
        token's identity, asked once with whoami), and with 'userpass' the JupyterHub user name.""",
    ).tag(config=True)

    auth_type = Enum(
        ["userpass", "oidc"],
        "oidc",
        help="""How to authenticate: 'oidc' (the default, for OIDC logins) sends the user's own access
        token from token_file, which Rucio maps to the user's account (the Rucio server must trust
        the identity provider: docs/catalog.md); 'userpass' uses username/password (a Rucio without
        OIDC, or a shared account).""",
    ).tag(config=True)

    username = Unicode(help="Rucio userpass identity (auth_type 'userpass'). Defaults to the account.").tag(config=True)

    password = Unicode(
        help="Rucio userpass password (auth_type 'userpass'). Never logged. Defaults to $RUCIO_PASSWORD."
    ).tag(config=True)

    token_file = Unicode(
        help="""File holding the user's OIDC access token (auth_type 'oidc'). Defaults to
        $BEARER_TOKEN_FILE, which the gateway's token keeper keeps fresh; re-read when it changes.""",
    ).tag(config=True)

    ca_cert = Unicode("", help="CA bundle to verify the Rucio server's certificate; empty uses the system's.").tag(config=True)

    vo = Unicode("", help="The Rucio VO, for multi-VO instances; empty for the default VO.").tag(config=True)

    rse = Unicode(
        help="The storage element (RSE) the notebooks can read: stage-in rules replicate there.",
    ).tag(config=True)

    mount_path = Unicode(
        help="Where the RSE's storage is mounted in the notebook (local paths are under it).",
    ).tag(config=True)

    pfn_prefix = Unicode(
        "",
        help="""The part of the RSE's PFNs that corresponds to mount_path, e.g.
        'root://eos.example.org:1094//eos/data/' for a mount of /eos/data. Empty derives it from the
        RSE's protocol (scheme://hostname[:port]prefix). Paths that would leave mount_path are refused.""",
    ).tag(config=True)

    pfn_scheme = Unicode("", help="Protocol scheme of the RSE used to compute PFNs (e.g. 'file', 'root'); empty picks the RSE's first read protocol.").tag(config=True)

    rule_lifetime = Integer(
        14 * 24 * 3600, help="Lifetime of stage-in rules in seconds (0: no expiry); Rucio may clean the copies after it."
    ).tag(config=True)

    activity = Unicode("User Subscriptions", help="Rucio transfer activity of stage-in rules (sets their share and priority).").tag(config=True)

    did_type = Enum(["dataset", "collection"], "dataset", help="Which DIDs search returns: datasets only, or datasets and containers.").tag(config=True)

    timeout = Float(30.0, help="Seconds to wait for one Rucio call before reporting the service as unavailable.").tag(config=True)

    status_refresh_seconds = Float(
        5.0,
        help="""How old the bulk status snapshot may be while requests are in progress. Every client
        (widgets, kernels, REST calls) shares one snapshot, so Rucio sees one call per interval.""",
    ).tag(config=True)

    full_refresh_seconds = Float(
        300.0,
        help="""How often the status snapshot lists all of the user's rules; in between it asks Rucio
        only for the rules updated since the last refresh (every change to a rule, its expiry and
        Rucio's soft deletion included, updates it). The full listing is a safety net for an update
        committed later than updated_margin_seconds; its payload grows with the number of the
        user's live rules, ready ones included.""",
    ).tag(config=True)

    updated_margin_seconds = Float(
        10.0, help="Overlap when asking Rucio for rules updated since the last one seen (covers slow commits)."
    ).tag(config=True)

    idle_refresh_seconds = Float(30.0, help="How old the status snapshot may be when no request is in progress.").tag(config=True)

    max_search_offset = Integer(10000, help="How far into search results a client may page; narrower searches are needed beyond.").tag(config=True)

    details_cache_seconds = Float(
        300.0, help="How long a dataset's metadata and availability, fetched for search results, are reused."
    ).tag(config=True)

    search_rows_seconds = Float(
        60.0,
        help="""How long the rows of a search are kept for its next pages (a first page always asks
        Rucio afresh). Rucio's list_dids has no offset: without them each further page would fetch
        and parse every row before it again.""",
    ).tag(config=True)

    freeform_metadata_plugins = List(
        Unicode(),
        ["JSON"],
        help="""Rucio metadata plugins that hold free-form metadata (the server's [metadata] plugins
        setting; Rucio's default is JSON). Search details ask each for the page in one bulk call,
        apart from the DID columns (sizes, file counts, built-in keys): one database query in Rucio
        for the page, while a free-form plugin costs it one query per dataset. A partial search (the
        widget's) answers without waiting for either. Empty: results show the built-in keys and the
        filters' own keys only.""",
    ).tag(config=True)

    rule_comment = Unicode("science-gateway stage-in", help="Comment set on the rules the gateway creates.").tag(config=True)

    publish_rse = Unicode(
        "",
        help="""The storage element (RSE) published results are uploaded to, with a protocol the
        user's server can write (e.g. a posix/file:// one on a shared file system). Its name
        must be one Rucio lets the account add replicas on (the generic policy: a name ending in
        SCRATCHDISK, USERDISK or LOCALGROUPDISK) and the account needs quota there. Empty turns
        publishing off.""",
    ).tag(config=True)

    publish_lifetime = Integer(
        0, help="Lifetime in seconds of the rule that keeps published datasets on publish_rse (0: no expiry)."
    ).tag(config=True)

    publish_timeout = Float(
        600.0, help="Seconds an upload of a publish's files may take before it is reported as failed."
    ).tag(config=True)

    @default("rucio_host")
    def _rucio_host_default(self):
        return os.environ.get("RUCIO_HOST", "")

    @default("auth_host")
    def _auth_host_default(self):
        return self.rucio_host

    @default("account")
    def _account_default(self):
        if os.environ.get("RUCIO_ACCOUNT"):
            return os.environ["RUCIO_ACCOUNT"]
        # with a token Rucio knows whose it is: empty here, filled from whoami at the first call
        return "" if self.auth_type == "oidc" else os.environ.get("JUPYTERHUB_USER", "")

    @default("username")
    def _username_default(self):
        return self.account

    @default("password")
    def _password_default(self):
        return os.environ.get("RUCIO_PASSWORD", "")

    @default("token_file")
    def _token_file_default(self):
        return os.environ.get("BEARER_TOKEN_FILE", "")

    @default("display_name")
    def _display_name_default(self):
        return "Rucio"

    @default("publish_scope")
    def _publish_scope_default(self):
        # Rucio's convention for an account's own scope
        return f"user.{self.account}" if self.account and self.publish_rse else ""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._local = threading.local()
        self._rse_types = None
        self._rse_info = None
        self._scopes = None
        self._snapshot = None  # (monotonic time, {rule id: StageRequest})
        self._refreshing = None
        self._files = {}  # did -> [file dicts]
        self._file_objects = {}  # did -> [DatasetFile], what list_files answers
        self._search_rows = {}  # (scope, filters, DID type) -> (time, list_dids rows, all rows there are)
        self._failed = {}  # (rule id, stuck count) -> [FailedFile]
        self._pfns = {}  # scope:name -> PFN, when Rucio computes them
        # search details per (scope, name): the DID columns, the dataset replicas, the free-form keys
        def max_age():
            return self.details_cache_seconds

        self._columns = BulkCache(self._fetch_columns, max_age, missing={}, log=self.log)
        self._replicas = BulkCache(self._fetch_replicas, max_age, missing=[], log=self.log)
        self._freeform = BulkCache(self._fetch_freeform, max_age, missing={}, log=self.log)
        self._watermark = None  # the latest rule updated_at seen (Rucio's clock)
        self._last_full = 0.0
        self._outage = None  # (wall-clock start, monotonic time of the last failed try, why) while Rucio fails

    async def close(self) -> None:
        for cache in (self._columns, self._replicas, self._freeform):  # what a partial search left on its way
            cache.clear()
        await super().close()

    # -- talking to Rucio --------------------------------------------------------------------------

    def _new_client(self):
        from rucio.client import Client

        kwargs = dict(
            rucio_host=self.rucio_host or None,
            auth_host=self.auth_host or None,
            account=self.account or None,
            ca_cert=self.ca_cert or None,
            timeout=self.timeout,
            user_agent="science-gateway",
            vo=self.vo or None,
        )
        if self.auth_type == "userpass":
            creds = {"username": self.username, "password": self.password}
            return Client(auth_type="userpass", creds=creds, **kwargs)
        # rucio-clients' oidc mode finds the token through the WLCG discovery convention
        os.environ["BEARER_TOKEN_FILE"] = self.token_file
        return bearer_token_client()(auth_type="oidc", **kwargs)

    def _token_mtime(self) -> float:
        """The token file's mtime; a clear 401 when the token keeper has not written it yet."""
        if not self.token_file:
            raise NotAuthenticated(
                "no OIDC token for Rucio: neither RucioCatalog.token_file nor $BEARER_TOKEN_FILE is set; "
                "start your server from the gateway (the token keeper sets it) or ask the gateway admin"
            )
        try:
            if os.path.getsize(self.token_file):
                return os.stat(self.token_file).st_mtime
        except FileNotFoundError:
            pass
        raise NotAuthenticated(
            f"no token yet: the token keeper has not written {self.token_file}; wait a few seconds, "
            "or log in to the gateway again (open /hub/home)"
        )

    def _read_token(self) -> str:
        with open(self.token_file) as f:
            return f.read().strip()

    def _whoami(self, token: str) -> str:
        """The account Rucio maps ``token`` to (``GET /accounts/whoami``), asked before a
        rucio-clients Client exists: that needs an account (rucio-clients 41 fails without one
        when there is no rucio.cfg). A refusal raises what rucio-clients would."""
        import requests
        from rucio.common.exception import CannotAuthenticate, RucioException

        r = requests.get(
            f"{self.rucio_host.rstrip('/')}/accounts/whoami", timeout=self.timeout, verify=self.ca_cert or True,
            headers={"X-Rucio-Auth-Token": token, "User-Agent": "science-gateway", **({"X-Rucio-VO": self.vo} if self.vo else {})},
        )
        if r.status_code == 401:
            raise CannotAuthenticate(f"Rucio refused the bearer token ({r.headers.get('ExceptionClass', 'HTTP 401')})")
        if r.status_code != 200:
            raise RucioException(f"whoami: http status code: {r.status_code}")
        return r.json()["account"]

    def _client(self):
        mtime = self._token_mtime() if self.auth_type == "oidc" else None
        if self.auth_type == "oidc" and not self.account and self.rucio_host:
            # the account Rucio maps the token's identity to: the user's own (asked once)
            self.account = self._whoami(self._read_token())
            self.log.info("Rucio maps the user's token to account %s", self.account)
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._new_client()
            self._local.token_mtime = None
        if self.auth_type == "oidc" and mtime != self._local.token_mtime:
            token = self._read_token()
            client.auth_token = token
            client.headers["X-Rucio-Auth-Token"] = token
            self._local.token_mtime = mtime
        return client

    async def _call(self, what: str, fn, *args, expect: tuple = (), call_timeout: float | None = None, **kwargs):
        """Run ``fn(client, *args, **kwargs)`` on the executor, with a timeout and one error shape.

        rucio-clients exceptions listed in ``expect`` reach the caller as they are (an expected
        answer such as DataIdentifierNotFound); every other error becomes a :class:`CatalogError`
        (:func:`rucio_error`), so nothing from Rucio turns into a 500 or a stack trace.
        """
        from rucio.common.exception import RucioException

        def call():
            return fn(self._client(), *args, **kwargs)

        try:
            return await asyncio.wait_for(self.run_blocking(call), call_timeout or self.timeout)
        except asyncio.CancelledError:
            raise
        except CatalogError:
            raise
        except expect:
            raise
        except asyncio.TimeoutError:
            raise BackendUnavailable(f"Rucio did not answer within {call_timeout or self.timeout:.0f} s ({what}); try again later") from None
        except RucioException as e:
            raise rucio_error(e, what, self.account, self.auth_type, self.rse) from None
        except (OSError, ConnectionError):
            raise BackendUnavailable(f"cannot reach Rucio at {self.rucio_host} ({what}); try again later") from None
        except Exception as e:
            if type(e).__module__.startswith(("requests", "urllib3")):  # connection errors and the like
                raise BackendUnavailable(f"cannot reach Rucio at {self.rucio_host} ({what}); try again later") from None
            self.log.warning("Rucio call %s failed with %s", what, type(e).__name__, exc_info=True)
            raise CatalogFailure(
                f"the catalogue answered {what} in a way the gateway did not understand ({type(e).__name__}); "
                "try again later or tell the gateway admin"
            ) from None

    async def _rse_type_map(self) -> dict[str, str]:
        if self._rse_types is None:
            rses = await self._call("list RSEs", lambda c: list(c.list_rses()))
            self._rse_types = {r["rse"]: r.get("rse_type", "DISK") for r in rses}
        return self._rse_types

    async def _search_scopes(self) -> list[str]:
        if self.allowed_scopes:
            return self.visible_scopes
        if self._scopes is None:
            self._scopes = sorted(await self._call("list scopes", lambda c: list(c.list_scopes())))
        return self._scopes

    # -- the read side -----------------------------------------------------------------------------

    @staticmethod
    def _list_dids(client, scope, filters, did_type, limit):
        """``list_dids`` with the server's ``limit`` (rucio-clients 41 does not send one)."""
        from requests.status_codes import codes
        from rucio.common.constants import HTTPMethod
        from rucio.common.utils import build_url

        path = "/".join([client.DIDS_BASEURL, quote_plus(scope), "dids", "search"])
        params = {"type": did_type, "filters": [filters], "long": True, "limit": limit}
        r = client._send_request(build_url(choice(client.list_hosts), path=path, params=params), method=HTTPMethod.GET)
        if r.status_code == codes.ok:
            return list(client._load_json_data(r))
        exc_cls, exc_msg = client._get_exception(headers=r.headers, status_code=r.status_code, data=r.content)
        raise exc_cls(exc_msg)

    async def _search(self, query: SearchQuery) -> SearchPage:
        from rucio.common.exception import DIDFilterSyntaxError, InvalidMetadata, KeyNotFound, ScopeNotFound

        scopes = [query.scope] if query.scope else await self._search_scopes()
        index, offset = decode_page(query.page, len(scopes), self.max_search_offset)
        filters = rucio_filters(query)
        found, next_token = [], None
        while index < len(scopes) and len(found) < query.limit:
            want = query.limit - len(found)
            try:
                # no extra row to learn whether more follow: Rucio streams rows in batches of 5,
                # so a 51st row costs list_dids another batch (6-12 % of the call)
                rows = await self._search_rows_for(scopes[index], filters, offset + want, fresh=not query.page)
            except ScopeNotFound:
                raise InvalidQuery(f"there is no scope {quote_prefix(scopes[index])} in {self.display_name}") from None
            except (InvalidMetadata, KeyNotFound, DIDFilterSyntaxError) as e:
                raise InvalidQuery(
                    f"Rucio cannot search with these filters ({_detail(e)}); built-in keys "
                    "(e.g. project, datatype) and free-form keys cannot be combined in one search"
                ) from None
            rows = rows[offset:]
            found.extend(rows[:want])
            if len(rows) >= want:  # a full page: more may follow (if not, the next page is empty)
                next_token = encode_page(index, offset + want)
                break
            index, offset = index + 1, 0
            if index < len(scopes) and len(found) == query.limit:
                next_token = encode_page(index, 0)
        if not found:
            return SearchPage([], next=next_token)
        if not query.details:
            return SearchPage([dataset_from_rucio(d, matched_metadata(query.filters), None, {}) for d in found], next=next_token)
        keys = [(d["scope"], d["name"]) for d in found]
        await self._details(keys, partial=query.partial)
        rse_types = self._rse_types or {}
        datasets = []
        for d, k in zip(found, keys):
            columns, freeform = self._columns.get(k), self._freeform.get(k) if self.freeform_metadata_plugins else {}
            datasets.append(dataset_from_rucio(
                d, merged_metadata(query.filters, columns, freeform), self._replicas.get(k, []), rse_types,
                metadata_pending=columns is None or freeform is None,
            ))
        return SearchPage(datasets, next=next_token)

    async def _search_rows_for(self, scope: str, filters: dict, need: int, fresh: bool) -> list[dict]:
        """At least ``need`` ``list_dids`` rows of a search (fewer when that is all there is).

        Rucio has no offset, so page k needs the first k pages' rows too. A first page asks for
        just its rows; later pages reuse the rows kept from the pages before (for
        :attr:`search_rows_seconds`) and, when they need more, ask for twice as many as are
        kept: paging through N results parses O(N) rows in all, not O(N^2/page size), and a
        100-page walk is 8 calls, not 100.
        """
        from rucio.common.exception import DIDFilterSyntaxError, InvalidMetadata, KeyNotFound, ScopeNotFound

        key = (scope, tuple(sorted(filters.items())), self.did_type)
        kept = None if fresh else self._search_rows.get(key)
        if kept is not None and time.monotonic() - kept[0] > self.search_rows_seconds:
            kept = None
        if kept is not None and (len(kept[1]) >= need or kept[2]):
            return kept[1]
        ask = need if kept is None else max(need, 2 * len(kept[1]))
        rows = await self._call(
            "search", self._list_dids, scope, filters, self.did_type, ask,
            expect=(ScopeNotFound, InvalidMetadata, KeyNotFound, DIDFilterSyntaxError),
        )
        if len(self._search_rows) >= 16:  # a few searches being paged at once, not a history
            self._search_rows.pop(next(iter(self._search_rows)))
        self._search_rows.pop(key, None)
        self._search_rows[key] = (time.monotonic(), rows, len(rows) < ask)
        return rows

    async def _details(self, keys: list[tuple[str, str]], partial: bool = False) -> None:
        """Bring the details of a page into the caches, each kind in one bulk call for the page.

        The dataset replicas (availability), the DID columns (sizes, file counts, built-in keys:
        one query in Rucio) and the free-form metadata (:attr:`freeform_metadata_plugins`: one
        query per dataset in Rucio) are fetched together. A partial search waits only for the
        dataset replicas, which also carry the sizes that a free-form search's list_dids lacks
        (Rucio's JSON plugin returns names only), and starts the rest after them, so the page's
        own call does not queue behind the slow ones in Rucio (each bulk call also costs Rucio a
        check of its body against its JSON schema, more than the query itself).
        """
        kinds = [self._replicas, self._columns] + ([self._freeform] if self.freeform_metadata_plugins else [])
        now = [self._replicas] if partial else kinds
        await asyncio.gather(self._rse_type_map(), *(cache.wait(keys) for cache in now))
        for cache in kinds:
            cache.start(keys)  # those a partial search did not wait for (nothing when all are here)

    async def _fetch_columns(self, keys) -> dict:
        dids = [{"scope": s, "name": n} for s, n in keys]
        rows = await self._call("metadata", lambda c: list(c.get_metadata_bulk(dids, plugin="DID_COLUMN")))
        return {(m["scope"], m["name"]): m for m in rows}

    async def _fetch_replicas(self, keys) -> dict:
        dids = [{"scope": s, "name": n} for s, n in keys]
        found = {}
        for r in await self._call("dataset replicas", lambda c: list(c.list_dataset_replicas_bulk(dids))):
            found.setdefault((r["scope"], r["name"]), []).append(r)
        return found

    async def _fetch_freeform(self, keys) -> dict:
        """One bulk call per free-form plugin, merged in plugin=ALL's order (a plugin the server
        does not have adds nothing, with a warning: the search still answers)."""
        from rucio.common.exception import UnsupportedMetadataPlugin

        dids = [{"scope": s, "name": n} for s, n in keys]
        found = {k: {} for k in keys}
        for plugin in self.freeform_metadata_plugins:
            try:
                rows = await self._call(
                    "free-form metadata", lambda c, plugin=plugin: list(c.get_metadata_bulk(dids, plugin=plugin)),
                    expect=(UnsupportedMetadataPlugin,),
                )
            except UnsupportedMetadataPlugin:
                self.log.warning(
                    "Rucio has no metadata plugin %r: check RucioCatalog.freeform_metadata_plugins", quote_prefix(plugin)
                )
                continue
            for row in rows:
                key = (row.get("scope"), row.get("name"))
                if key in found:
                    found[key].update({k: v for k, v in row.items() if k not in ("scope", "name")})
        return found

    async def _dataset_files(self, scope: str, name: str) -> list[dict] | None:
        from rucio.common.exception import DataIdentifierNotFound

        key = f"{scope}:{name}"
        if key not in self._files:
            try:
                self._files[key] = await self._call(
                    "list files", lambda c: list(c.list_files(scope, name)), expect=(DataIdentifierNotFound,)
                )
            except DataIdentifierNotFound:
                return None
        return self._files[key]

    async def _list_files(self, scope: str, name: str) -> list[DatasetFile] | None:
        found = await self._dataset_files(scope, name)
        if found is None:
            return None
        key = f"{scope}:{name}"
        if key not in self._file_objects:
            # built once per file list (like it, kept): 100,000 files are a third of a second of
            # work, off the event loop
            self._file_objects[key] = await self.run_blocking(
                lambda: [DatasetFile(scope=f["scope"], name=f["name"], bytes=f.get("bytes")) for f in found]
            )
        return list(self._file_objects[key])

    # -- local paths -------------------------------------------------------------------------------

    async def _rse_settings(self) -> dict:
        if self._rse_info is None:
            self._rse_info = await self._call("RSE protocols", lambda c: c.get_rse(self.rse))
        return self._rse_info

    def _read_protocol(self, rse_info) -> dict:
        protocols = [
            p for p in rse_info.get("protocols", [])
            if (not self.pfn_scheme or p["scheme"] == self.pfn_scheme) and (p.get("domains", {}).get("wan", {}).get("read") or 0) > 0
        ]
        if not protocols:
            raise BackendUnavailable(f"RSE {self.rse} has no readable {self.pfn_scheme or ''} protocol; check RucioCatalog.rse/pfn_scheme")
        return sorted(protocols, key=lambda p: p["domains"]["wan"]["read"])[0]

    def _prefix(self, protocol: dict) -> str:
        if self.pfn_prefix:
            return self.pfn_prefix
        prefix = protocol["prefix"] if protocol["prefix"].startswith("/") else "/" + protocol["prefix"]
        prefix = prefix if prefix.endswith("/") else prefix + "/"
        port = "" if protocol["scheme"] == "file" or not protocol.get("port") else f":{protocol['port']}"
        return f"{protocol['scheme']}://{protocol['hostname']}{port}{prefix}"

    async def _local_paths(self, files: list[dict]) -> dict[str, str | None]:
        """``scope:name`` -> local path (None when it would map outside the mount).

        For Rucio's built-in deterministic algorithms the path is computed here (no call); other
        RSEs get their PFNs from Rucio once per file list (50 names per call), then cached.
        """
        if not files:
            return {}
        info = await self._rse_settings()
        algorithm = info.get("lfn2pfn_algorithm") or "hash"
        if info.get("deterministic", True) and algorithm in LOCAL_LFN2PFN and not self.pfn_prefix:
            # safe_join resolves symlinks: file system work, off the event loop
            return await self.run_blocking(lambda: {
                f"{f['scope']}:{f['name']}": safe_join(self.mount_path, deterministic_path(f["scope"], f["name"], algorithm))
                for f in files
            })
        protocol = self._read_protocol(info)
        prefix = self._prefix(protocol)
        todo = [f for f in files if f"{f['scope']}:{f['name']}" not in self._pfns]
        for i in range(0, len(todo), 50):
            chunk = [f"{f['scope']}:{f['name']}" for f in todo[i:i + 50]]
            self._pfns.update(await self._call(
                "lfns2pfns", lambda c, chunk=chunk: c.lfns2pfns(self.rse, chunk, operation="read", scheme=protocol["scheme"])
            ))
        dids = [f"{f['scope']}:{f['name']}" for f in files]
        return await self.run_blocking(lambda: {
            did: pfn_to_path(self._pfns[did], prefix, self.mount_path) if did in self._pfns else None for did in dids
        })

    # -- the stage side ----------------------------------------------------------------------------

    def utcnow(self) -> datetime.datetime:
        """The clock (a seam for tests); naive UTC, as rucio-clients returns dates."""
        return utcnow_datetime().replace(tzinfo=None)

    async def _my_rules(self, **filters) -> list[dict]:
        """This account's live rules on the notebook's RSE (a cancelled rule expires at once)."""
        rules = await self._call(
            "list rules",
            lambda c: list(c.list_replication_rules(filters={"account": self.account, "rse_expression": self.rse, **filters})),
        )
        return [r for r in rules if is_live(r, self.utcnow())]

    async def _request_from_rule(self, rule: dict) -> StageRequest:
        files = await self._dataset_files(rule["scope"], rule["name"]) or []
        paths = await self._local_paths(files)
        ready = await self.run_blocking(
            lambda: [p for p in paths.values() if p and (rule["state"] == "OK" or os.path.exists(p))]
        )
        failed = []
        outside = [d for d, p in paths.items() if p is None]
        if rule["locks_stuck_cnt"]:
            key = (rule["id"], rule["locks_stuck_cnt"])
            if key not in self._failed:
                locks = await self._call("rule locks", lambda c: list(c.list_replica_locks(rule["id"])))
                reason = rule.get("error") or "the transfer failed"
                self._failed[key] = [
                    FailedFile(f"{lk['scope']}:{lk['name']}", reason) for lk in locks if lk["state"] == "STUCK"
                ]
            failed = list(self._failed[key])
        failed += [FailedFile(d, "its storage path maps outside the notebook's mount; ask the gateway admin") for d in outside]
        return request_from_rule(rule, files, ready, failed)

    async def _refresh(self) -> dict[str, StageRequest]:
        """Bring the snapshot up to date: all rules now and then, else only the rules Rucio updated.

        Every transferred file updates its rule, so asking for the rules updated since the last
        one seen (minus a margin, on Rucio's own clock) returns only what changed: the payload
        follows progress, not the number of requests or files.
        """
        now = time.monotonic()
        watermark = self._watermark
        full = self._snapshot is None or watermark is None or now - self._last_full >= self.full_refresh_seconds
        if full:
            rules = await self._my_rules()
            requests = {}
        else:
            since = rucio_date(watermark - datetime.timedelta(seconds=self.updated_margin_seconds))
            rules = await self._call(
                "list rules",
                lambda c: list(c.list_replication_rules(
                    filters={"account": self.account, "rse_expression": self.rse, "updated_after": since}
                )),
            )
            requests = dict(self._snapshot[1])
            for rule in [r for r in rules if not is_live(r, self.utcnow())]:
                requests.pop(rule["id"], None)
            rules = [r for r in rules if is_live(r, self.utcnow())]
        for rule in rules:
            requests[rule["id"]] = await self._request_from_rule(rule)
            updated = rule.get("updated_at")
            if isinstance(updated, datetime.datetime) and (watermark is None or updated > watermark):
                watermark = updated
        # only a refresh that got through moves the watermark: one that failed half-way (Rucio
        # went away between two calls) must not skip the rules it did not reach
        self._watermark = watermark
        if full:
            self._last_full = now
        self._snapshot = (time.monotonic(), requests)
        return requests

    async def _refresh_noting_outages(self) -> dict[str, StageRequest]:
        """:meth:`_refresh`, keeping track of an outage: when it began, the last try, why."""
        try:
            requests = await self._refresh()
        except CatalogError as e:
            first = self._outage is None
            since = utcnow_datetime() if first else self._outage[0]
            self._outage = (since, time.monotonic(), str(e))
            if first:
                self.log.warning("Rucio status refresh failed (%s); serving the last status until Rucio answers", e)
            raise
        if self._outage is not None:
            self.log.info("Rucio answers again (the status was stale since %s UTC)", f"{self._outage[0]:%H:%M:%S}")
            self._outage = None
        return requests

    @property
    def status_notice(self) -> str:
        """Why the status shown is not fresh, while Rucio does not answer ("" when it is fresh)."""
        if self._outage is None or self._snapshot is None:
            return ""
        reason = self._outage[2].removesuffix("; try again later")
        as_of = utcnow_datetime() - datetime.timedelta(seconds=time.monotonic() - self._snapshot[0])
        return (
            f"Status as of {as_of:%H:%M:%S} UTC, not updated since {self._outage[0]:%H:%M:%S} UTC: {reason}. "
            "Your requests are kept by Rucio and go on; this updates by itself once Rucio answers again."
        )

    def _stale(self, requests: dict[str, StageRequest]) -> dict[str, StageRequest]:
        notice = self.status_notice
        return {key: replace(r, notice=notice) for key, r in requests.items()}

    async def _requests(self, max_age: float | None = None) -> dict[str, StageRequest]:
        """The shared snapshot, refreshed when older than allowed (one refresh at a time).

        While Rucio does not answer, the last snapshot is served with a notice that says so
        (:attr:`status_notice`) at once, and Rucio is asked again in the background at most every
        ``max_age``: a request is never reported lost or failed because Rucio is down, and a hung
        Rucio does not hold every status call for its timeout. Without a snapshot (a server
        started during the outage) the error itself is raised.
        """
        if self._snapshot is not None:
            taken, requests = self._snapshot
            if max_age is None:
                busy = any(r.state == IN_PROGRESS for r in requests.values())
                max_age = self.status_refresh_seconds if busy else self.idle_refresh_seconds
            if time.monotonic() - taken < max_age:
                return requests
            if self._outage is not None:  # try again in the background, at most every max_age
                if self._refreshing is None and time.monotonic() - self._outage[1] >= max_age:
                    self._start_refresh()
                return self._stale(requests)
        try:
            return await asyncio.shield(self._start_refresh())
        except CatalogError:
            if self._snapshot is None:
                raise
            return self._stale(self._snapshot[1])

    def _start_refresh(self) -> asyncio.Future:
        if self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._refresh_noting_outages())
            self._refreshing.add_done_callback(self._refresh_done)
        return self._refreshing

    def _refresh_done(self, future: asyncio.Future) -> None:
        self._refreshing = None
        if not future.cancelled():
            future.exception()  # retrieved here: a refresh nobody awaits is not an "unretrieved" error

    async def _status(self) -> list[StageRequest]:
        return sorted((await self._requests()).values(), key=lambda r: r.created_at or "")

    async def _get_request(self, request_id: str) -> StageRequest | None:
        found = (await self._requests()).get(request_id)
        if found is None:  # made since the snapshot (e.g. by another kernel)? look once more
            found = (await self._requests(max_age=1.0)).get(request_id)
        if found is None and self._outage is not None:
            # not in a stale snapshot: unknown, not "no such request"
            raise BackendUnavailable(
                f"request {request_id} is not in the last status Rucio gave ({self._outage[2]})"
            )
        return found

    async def _stage(self, scope: str, name: str) -> StageRequest | None:
        from rucio.common.exception import DataIdentifierNotFound, DuplicateRule, InsufficientAccountLimit

        did = f"{scope}:{name}"
        existing = await self._my_rules(scope=scope, name=name)
        if existing:
            return replace(await self._request_from_rule(existing[0]), reused=True)
        try:
            info = await self._call("get DID", lambda c: c.get_did(scope, name), expect=(DataIdentifierNotFound,))
        except DataIdentifierNotFound:
            return None
        if info.get("type", info.get("did_type")) == "FILE":
            raise InvalidQuery(f"{did} is a file; stage the dataset that holds it")
        need = info.get("bytes") or 0
        usage = await self._call("quota", lambda c: list(c.get_local_account_usage(self.account, self.rse)))
        remaining = usage[0].get("bytes_remaining") if usage else None
        if remaining is not None and need > remaining:
            raise self._quota_error(did, need, remaining, usage[0].get("bytes_limit"))
        replicas = await self._call("dataset replicas", lambda c: list(c.list_dataset_replicas(scope, name, deep=True)))
        rse_types = await self._rse_type_map()
        tape = not any(
            r.get("state") == "AVAILABLE" and rse_types.get(r["rse"], "DISK") == "DISK" for r in replicas
        ) and any(rse_types.get(r["rse"]) == "TAPE" for r in replicas)
        comment = f"{self.rule_comment}; {TAPE_MARK}" if tape else self.rule_comment
        try:
            rule_ids = await self._call(
                "add rule",
                lambda c: c.add_replication_rule(
                    [{"scope": scope, "name": name}], 1, self.rse,
                    lifetime=self.rule_lifetime or None, activity=self.activity, comment=comment,
                ),
                expect=(DuplicateRule, InsufficientAccountLimit),
            )
        except DuplicateRule:
            rule_ids = [r["id"] for r in await self._my_rules(scope=scope, name=name)]
        except InsufficientAccountLimit:
            raise self._quota_error(did, need, remaining, usage[0].get("bytes_limit") if usage else None) from None
        rule = await self._call("get rule", lambda c: c.get_replication_rule(rule_ids[0]))
        request = await self._request_from_rule(rule)
        if self._snapshot is not None:
            self._snapshot[1][request.id] = request
        return request

    def _quota_error(self, did, need, remaining, limit) -> CatalogError:
        return QuotaExceeded(
            f"staging {did} needs {format_bytes(need)} on {self.rse}, but account {self.account!r} has only "
            f"{format_bytes(remaining)} of its {format_bytes(limit)} quota free there; cancel requests "
            "you no longer need or ask your gateway admin for more quota"
        )

    async def _cancel(self, request_id: str) -> bool:
        """Expire the rule now (Rucio's cleaner removes it; the copies may stay until space is needed).

        Setting the lifetime to 0 rather than deleting: Rucio's delete is soft and keeps a rule
        listed for up to an hour, so the cancellation would not be visible to a restarted server.
        """
        from rucio.common.exception import AccessDenied as RucioAccessDenied, RuleNotFound

        if await self._get_request(request_id) is None:
            return False
        cancelled = True
        try:
            await self._call(
                "expire rule", lambda c: c.update_replication_rule(request_id, {"lifetime": 0}),
                expect=(RucioAccessDenied, RuleNotFound),
            )
        except RucioAccessDenied:
            await self._call(
                "delete rule", lambda c: c.delete_replication_rule(request_id, purge_replicas=False),
                expect=(RuleNotFound,),
            )
        except RuleNotFound:  # gone meanwhile (deleted by another client): forget it all the same
            cancelled = False
        if self._snapshot is not None:
            self._snapshot[1].pop(request_id, None)
        return cancelled

    # -- the publish side --------------------------------------------------------------------------

    def _ensure_clients_config(self) -> None:
        """rucio-clients' storage protocols read a setting or two (``[common] multi_vo``) from a
        ``rucio.cfg`` even when the client is built from arguments. When none is found (this
        backend is configured by traits), a minimal one without credentials is written to a
        private folder and read once into rucio-clients' cached configuration; the process
        environment is left as it was."""
        import tempfile

        from rucio.common import config
        from rucio.common.exception import ConfigNotFound

        with _CLIENTS_CONFIG_LOCK:
            try:
                config.get_config()
                return
            except ConfigNotFound:
                pass
            folder = tempfile.mkdtemp(prefix="sg-rucio-config-")
            path = os.path.join(folder, "rucio.cfg")
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
                f.write(f"[common]\nmulti_vo = {bool(self.vo)}\n\n[client]\nrucio_host = {self.rucio_host}\n"
                        f"auth_host = {self.auth_host}\n")
            before = os.environ.get("RUCIO_CONFIG")
            os.environ["RUCIO_CONFIG"] = path
            try:
                config.clean_cached_config()
                config.get_config()
            finally:
                if before is None:
                    del os.environ["RUCIO_CONFIG"]
                else:
                    os.environ["RUCIO_CONFIG"] = before
            self.log.info("rucio-clients found no rucio.cfg: using a minimal one (%s) for uploads", path)

    def _upload_sync(self, client, items: list[dict]) -> None:
        """rucio-clients' upload of ``items`` with this backend's client (blocking)."""
        from rucio.client.uploadclient import UploadClient
        from rucio.rse import rsemanager

        self._ensure_clients_config()

        # rucio-clients' RSE lookup would build a client of its own from a config file: give it
        # the RSE as this backend's client sees it
        key = f"rse_info_{self.publish_rse}:{client.vo}"
        if not rsemanager.RSE_REGION.get(key):
            rsemanager.RSE_REGION.set(key, client.get_rse(self.publish_rse))
        UploadClient(_client=client, logger=_UploadLog(self.log), tracing=False).upload(items)

    async def _publish(self, scope, name, files, metadata, provenance: Provenance) -> PublishedDataset:
        from rucio.common.exception import DataIdentifierAlreadyExists

        provenance = replace(provenance, user={**provenance.user, "account": self.account})
        did = f"{scope}:{name}"
        rule = {"account": self.account, "copies": 1, "rse_expression": self.publish_rse, "grouping": "DATASET",
                "lifetime": self.publish_lifetime or None}
        try:
            # first: Rucio refuses a scope that is not this account's before anything is uploaded
            await self._call(
                "add dataset", lambda c: c.add_dataset(scope, name, rules=[rule]), expect=(DataIdentifierAlreadyExists,)
            )
        except DataIdentifierAlreadyExists:
            raise CatalogError(f"{did} exists already in Rucio; publish under another name", status=409) from None
        items = [
            {"path": str(real), "rse": self.publish_rse, "did_scope": scope, "did_name": did_name,
             "dataset_scope": scope, "dataset_name": name, "register_after_upload": True}
            for real, _relative, did_name in files
        ]
        meta = {**metadata, **provenance.to_metadata()}
        try:
            await self._call("upload", self._upload_sync, items, call_timeout=self.publish_timeout)
            await self._call("set metadata", lambda c: c.set_metadata_bulk(scope, name, meta))
            await self._call("close dataset", lambda c: c.close(scope, name))
        except CatalogError as e:
            # the dataset exists (open, perhaps with part of the files): say so, so the user
            # publishes again under another name rather than wondering what is there
            raise type(e)(f"{did} was created in Rucio but the publish did not finish: {e}; publish again under another name",
                          status=e.status) from None
        checksums = await self._file_checksums(scope, name) or []
        order = {did_name: i for i, (_r, _rel, did_name) in enumerate(files)}
        checksums.sort(key=lambda f: order.get(f.name, len(order)))
        return PublishedDataset(
            scope=scope, name=name, rse=self.publish_rse, files=checksums, metadata=dict(metadata),
            provenance=provenance, sources=[f[1] for f in files],
        )

    async def _file_checksums(self, scope: str, name: str) -> list[FileChecksum] | None:
        from rucio.common.exception import DataIdentifierNotFound

        try:
            rows = await self._call("list files", lambda c: list(c.list_files(scope, name)), expect=(DataIdentifierNotFound,))
        except DataIdentifierNotFound:
            return None
        md5 = {}
        lacking = [{"scope": f["scope"], "name": f["name"]} for f in rows if not f.get("md5")]
        for i in range(0, len(lacking), 500):  # list_files has no md5: the DID columns have it
            chunk = lacking[i:i + 500]
            for m in await self._call("file checksums", lambda c, chunk=chunk: list(c.get_metadata_bulk(chunk, plugin="DID_COLUMN"))):
                md5[(m["scope"], m["name"])] = m.get("md5")
        return [
            FileChecksum(scope=f["scope"], name=f["name"], bytes=f.get("bytes"),
                         md5=f.get("md5") or md5.get((f["scope"], f["name"])), adler32=f.get("adler32"))
            for f in rows
        ]


#: one rucio-clients configuration per process: set up by one thread at a time
_CLIENTS_CONFIG_LOCK = threading.Lock()


class _UploadLog:
    """A logger for rucio-clients' UploadClient, which calls it both as ``logger.log(level, msg)``
    and as ``logger(level, msg)``."""

    def __init__(self, log):
        self.log = log.log

    def __call__(self, level, msg, *args):
        self.log(level, msg, *args)
