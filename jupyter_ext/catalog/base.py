"""The one base class for catalogue backends.

Override ladder (what a backend overrides, in increasing depth):

1. ``@default`` values for the traits below (display name, page size limit, allowed scopes).
2. The read side: :meth:`CatalogBackend.search` and :meth:`CatalogBackend.list_files`.
3. The stage side: :meth:`CatalogBackend.stage`, :meth:`CatalogBackend.status` (every request of
   this user, in bulk) and :meth:`CatalogBackend.cancel`.
4. Only for speed: :meth:`CatalogBackend.get_request` and :meth:`CatalogBackend.paths`, which by
   default read :meth:`status`.

Callers (the REST handlers, the Python API) validate user input with :meth:`query`,
:meth:`check_did` and :func:`~science_gateway.core.catalog.check_request_id` before a backend sees it; backends must not
override :meth:`query` or :meth:`check_did`. Expected "no" answers are return values (``None`` for
"no such dataset/request of yours", ``False`` for "nothing cancelled"); input a person must fix
raises a :class:`CatalogError` subclass whose message says how.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from traitlets import Integer, List, Unicode
from traitlets.config import LoggingConfigurable

from ...core.catalog import (  # noqa: F401 (the error family, re-exported for backends)
    BackendUnavailable,
    CatalogError,
    DatasetFile,
    InvalidDID,
    InvalidQuery,
    QuotaExceeded,
    ScopeNotAllowed,
    SearchPage,
    SearchQuery,
    StageRequest,
    check_request_id,
    parse_did,
    parse_filters,
)

_PATTERN_RE = re.compile(r"^[A-Za-z0-9*._/-]{1,250}$")
_KEY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_VALUE_RE = re.compile(r"^[A-Za-z0-9*._:/+-]{1,250}$")


class CatalogBackend(LoggingConfigurable):
    """Search datasets, list their files, and stage them where the notebook can read them."""

    display_name = Unicode("Catalogue", help="Name shown to users for this catalogue.").tag(config=True)

    max_page_size = Integer(
        500, help="Largest page of search results a client may ask for; larger requests are refused."
    ).tag(config=True)

    allowed_scopes = List(
        Unicode(),
        help="""Scopes the users of this gateway may search and stage from (the group policy's
        catalogue scopes). Empty means every scope the catalogue lists. A scope outside this list
        is refused with 403 and never reaches the catalogue.""",
    ).tag(config=True)

    # -- validation (callers use these; backends do not override them) ---------------------------

    def check_scope(self, scope: str) -> str:
        if self.allowed_scopes and scope not in self.allowed_scopes:
            raise ScopeNotAllowed(
                f"scope {scope!r} is not one you may use here; allowed: {', '.join(self.allowed_scopes)}"
            )
        return scope

    def check_did(self, did: str) -> tuple[str, str]:
        """``scope:name`` split and checked against the DID grammar and the allowed scopes."""
        scope, name = parse_did(did)
        self.check_scope(scope)
        return scope, name

    def query(self, pattern="*", filters=None, limit=50, page=None, scope=None, details=True) -> SearchQuery:
        """Validate raw user input into a :class:`SearchQuery`, raising :class:`InvalidQuery`."""
        pattern = pattern or "*"
        if ":" in pattern and scope is None:
            scope, _, pattern = pattern.partition(":")
            pattern = pattern or "*"
        if not _PATTERN_RE.match(pattern) or ".." in pattern:
            raise InvalidQuery(
                f"name pattern {pattern!r} may hold letters, digits, '.', '_', '-', '/' and '*' only (no '..')"
            )
        if scope:
            try:
                parse_did(f"{scope}:x")
            except InvalidDID as e:
                raise InvalidQuery(str(e)) from None
            self.check_scope(scope)
        if isinstance(filters, str):
            filters = parse_filters(filters)
        filters = dict(filters or {})
        for key, value in filters.items():
            if not isinstance(key, str) or not _KEY_RE.match(key):
                raise InvalidQuery(f"metadata key {key!r} must start with a letter and hold letters, digits, '_', '.' or '-'")
            if not isinstance(value, str) or not _VALUE_RE.match(value):
                raise InvalidQuery(f"value {value!r} for {key!r} holds characters a filter cannot use")
        try:
            limit = int(limit)
        except (TypeError, ValueError):
            raise InvalidQuery(f"limit {limit!r} must be a whole number") from None
        if not 1 <= limit <= self.max_page_size:
            raise InvalidQuery(f"limit must be between 1 and {self.max_page_size}, not {limit}")
        if page is not None and (not isinstance(page, str) or len(page) > 200):
            raise InvalidQuery("page token was not issued by this catalogue")
        if isinstance(details, str):
            if details.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise InvalidQuery(f"details must be true or false, not {details!r}")
            details = details.lower() in ("true", "1", "yes")
        return SearchQuery(
            pattern=pattern, filters=filters, limit=limit, page=page or None, scope=scope or None, details=bool(details)
        )

    # -- the read side ------------------------------------------------------------------------------

    async def search(self, query: SearchQuery) -> SearchPage:
        """One page of datasets whose name matches ``query.pattern`` and metadata ``query.filters``."""
        raise NotImplementedError

    async def list_files(self, did: str) -> list[DatasetFile] | None:
        """The files of dataset ``did``, or None when there is no such dataset."""
        raise NotImplementedError

    # -- the stage side -----------------------------------------------------------------------------

    async def stage(self, did: str) -> StageRequest | None:
        """Make dataset ``did`` readable from the notebook; None when there is no such dataset.

        Staging a dataset that already has a request returns that request (``reused=True``).
        Checks the quota before creating anything and raises :class:`QuotaExceeded` when the
        dataset would not fit.
        """
        raise NotImplementedError

    async def status(self) -> list[StageRequest]:
        """Every stage-in request of this user, refreshed in bulk (not one call per file)."""
        raise NotImplementedError

    async def cancel(self, request_id: str) -> bool:
        """Cancel one of this user's requests; False when the user has no such request."""
        raise NotImplementedError

    async def get_request(self, request_id: str) -> StageRequest | None:
        """One of this user's requests, or None (also for another user's request id)."""
        check_request_id(request_id)
        for request in await self.status():
            if request.id == request_id:
                return request
        return None

    async def paths(self, request_id: str) -> list[str] | None:
        """Local paths of the files of a request that are ready now, or None (no such request)."""
        request = await self.get_request(request_id)
        return None if request is None else request.paths

    async def close(self) -> None:
        """Release clients and threads (the extension calls this when the server stops)."""
