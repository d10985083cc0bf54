"""The one base class for catalogue backends.

The public methods (:meth:`~CatalogBackend.search`, :meth:`~CatalogBackend.list_files`,
:meth:`~CatalogBackend.list_files_page`,
:meth:`~CatalogBackend.stage`, :meth:`~CatalogBackend.status`, :meth:`~CatalogBackend.cancel`,
:meth:`~CatalogBackend.get_request`, :meth:`~CatalogBackend.paths`, :meth:`~CatalogBackend.publish`,
:meth:`~CatalogBackend.file_checksums`) are template methods: each
validates its input (the DID grammar, the allowed scopes, the request id grammar, the search
query, the paths and metadata of a publish) and only then calls the backend's hook, so a backend
cannot skip validation. Callers (the
REST handlers, the Python API) hand them raw user input.

Override ladder (what a backend overrides, in increasing depth):

1. ``@default`` values for the traits below (display name, page size limit, allowed scopes,
   executor size).
2. The read side: :meth:`~CatalogBackend._search` (a validated :class:`SearchQuery`) and
   :meth:`~CatalogBackend._list_files` (a checked scope and name).
3. The stage side: :meth:`~CatalogBackend._stage` (a checked scope and name),
   :meth:`~CatalogBackend._status` (every request of this user, in bulk) and
   :meth:`~CatalogBackend._cancel` (a checked request id).
4. Only for speed: :meth:`~CatalogBackend._get_request` and :meth:`~CatalogBackend._paths`, which
   by default read :meth:`~CatalogBackend._status`.
5. The publish side (optional: without it a publish answers "not offered here"):
   :attr:`~CatalogBackend.publish_scope` (a ``@default``), :meth:`~CatalogBackend._publish` (a
   checked scope and name, files resolved inside the user's root, checked metadata and
   provenance) and :meth:`~CatalogBackend._file_checksums` (a checked DID; what RO-Crates list).

Backends must not override the public methods, :meth:`~CatalogBackend.query`,
:meth:`~CatalogBackend.check_did` or :meth:`~CatalogBackend.check_scope`. Blocking work (the file
system, a blocking SDK) goes through :meth:`~CatalogBackend.run_blocking`, never on the event
loop. Expected "no" answers are return values (``None`` for "no such dataset/request of yours",
``False`` for "nothing cancelled"); input a person must fix raises a :class:`CatalogError`
subclass whose message says how and quotes at most a short prefix of what was refused.
"""

from __future__ import annotations

import asyncio
import functools
import re
from concurrent.futures import ThreadPoolExecutor

from traitlets import Integer, List, Unicode
from traitlets.config import LoggingConfigurable

from ...core.catalog import (  # noqa: F401 (the error family, re-exported for backends)
    BackendUnavailable,
    CatalogError,
    CatalogFailure,
    DatasetFile,
    InvalidDID,
    InvalidQuery,
    NotFound,
    QuotaExceeded,
    ScopeNotAllowed,
    SearchPage,
    SearchQuery,
    StageRequest,
    check_request_id,
    parse_did,
    parse_filters,
)
from ...core.publish import (
    MAX_FILES,
    FileChecksum,
    InvalidPublish,
    Provenance,
    PublishedDataset,
    check_dataset_name,
    check_environment,
    check_inputs,
    check_jobs,
    check_metadata,
    check_parameters,
    check_user,
    current_environment,
    file_did_name,
    resolve_user_file,
    utc_timestamp,
)
from ...core.text import quote_prefix

_PATTERN_RE = re.compile(r"^[A-Za-z0-9*._/-]{1,250}$")
_KEY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_VALUE_RE = re.compile(r"^[A-Za-z0-9*._:/+-]{1,250}$")
#: ASCII digits only: ``int()`` also takes other scripts' digits ('\u0663', '\uff13')
_NUMBER_RE = re.compile(r"^[0-9]{1,12}$")
#: page tokens are opaque, short and printable ASCII
_PAGE_RE = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
#: longest filter text a search accepts (all its key=value pairs together)
MAX_FILTERS_LENGTH = 4096
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


class CatalogBackend(LoggingConfigurable):
    """Search datasets, list their files, and stage them where the notebook can read them."""

    display_name = Unicode("Catalogue", help="Name shown to users for this catalogue.").tag(config=True)

    max_page_size = Integer(
        500, help="Largest page of search results a client may ask for; larger requests are refused."
    ).tag(config=True)

    allowed_scopes = List(
        Unicode(),
        help="""Scopes the users of this catalogue may search and stage from: one list for the
        catalogue (every user of the server gets the same list). Empty means every scope the
        catalogue lists. A scope outside this list is refused with 403 and never reaches the
        catalogue.""",
    ).tag(config=True)

    max_workers = Integer(
        4, help="Threads running this backend's blocking work (file checks, a blocking SDK); the executor is bounded by this."
    ).tag(config=True)

    publish_scope = Unicode(
        "",
        help="""The scope a user's publishes go to (their own: Rucio's user.<account>, the demo's
        user.<user>); empty turns publishing off for this catalogue. Searches may always look in
        it, whatever allowed_scopes says.""",
    ).tag(config=True)

    _executor: ThreadPoolExecutor | None = None

    #: why the last :meth:`status` is not fresh ("" when it is): a backend that serves its last
    #: known status while the catalogue does not answer says so here (and in each request's
    #: ``notice``); the REST API passes it on
    status_notice: str = ""

    # -- validation (the public methods call these; backends do not override them) ---------------

    @property
    def visible_scopes(self) -> list[str]:
        """The allowed scopes and the user's publish scope (empty: every scope)."""
        if not self.allowed_scopes:
            return []
        extra = [self.publish_scope] if self.publish_scope and self.publish_scope not in self.allowed_scopes else []
        return list(self.allowed_scopes) + extra

    def check_scope(self, scope: str) -> str:
        if self.allowed_scopes and scope not in self.visible_scopes:
            raise ScopeNotAllowed(
                f"scope {quote_prefix(scope)} is not one you may use here; allowed: {', '.join(self.allowed_scopes)}"
            )
        return scope

    def check_did(self, did: str) -> tuple[str, str]:
        """``scope:name`` split and checked against the DID grammar and the allowed scopes."""
        scope, name = parse_did(did)
        self.check_scope(scope)
        return scope, name

    def query(self, pattern="*", filters=None, limit=50, page=None, scope=None, details=True, partial=False) -> SearchQuery:
        """Validate raw user input into a :class:`SearchQuery`, raising :class:`InvalidQuery`."""
        pattern = pattern or "*"
        if not isinstance(pattern, str):
            raise InvalidQuery(f"name pattern {quote_prefix(pattern)} must be text")
        if ":" in pattern and scope is None:
            scope, _, pattern = pattern.partition(":")
            pattern = pattern or "*"
        if not _PATTERN_RE.fullmatch(pattern) or ".." in pattern:
            raise InvalidQuery(
                f"name pattern {quote_prefix(pattern)} may hold letters, digits, '.', '_', '-', '/' and '*' only (no '..')"
            )
        if scope:
            try:
                parse_did(f"{scope}:x")
            except InvalidDID as e:
                raise InvalidQuery(str(e)) from None
            self.check_scope(scope)
        filters = self._check_filters(filters)
        limit = self._check_limit(limit)
        if page is not None and page != "" and (not isinstance(page, str) or not _PAGE_RE.fullmatch(page)):
            raise InvalidQuery(f"page token {quote_prefix(page)} was not issued by this catalogue")
        return SearchQuery(
            pattern=pattern, filters=filters, limit=limit, page=page or None, scope=scope or None,
            details=self._check_flag("details", details), partial=self._check_flag("partial", partial),
        )

    @staticmethod
    def _check_filters(filters) -> dict[str, str]:
        if isinstance(filters, str):
            if len(filters) > MAX_FILTERS_LENGTH:
                raise InvalidQuery(f"filters must be at most {MAX_FILTERS_LENGTH} characters, not {len(filters)}")
            filters = parse_filters(filters)
        if filters is not None and not isinstance(filters, dict):
            raise InvalidQuery(f"filters {quote_prefix(filters)} must be text like 'key=value, key=value' or a dict")
        filters = dict(filters or {})
        for key, value in filters.items():
            if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
                raise InvalidQuery(
                    f"metadata key {quote_prefix(key)} must start with a letter and hold letters, digits, '_', '.' or '-'"
                )
            if not isinstance(value, str) or not _VALUE_RE.fullmatch(value):
                raise InvalidQuery(f"value {quote_prefix(value)} for {quote_prefix(key)} holds characters a filter cannot use")
        return filters

    def _check_limit(self, limit) -> int:
        if isinstance(limit, str) and _NUMBER_RE.fullmatch(limit):
            limit = int(limit)
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise InvalidQuery(f"limit {quote_prefix(limit)} must be a whole number (digits 0-9)")
        if not 1 <= limit <= self.max_page_size:
            raise InvalidQuery(f"limit must be between 1 and {self.max_page_size}, not {limit}")
        return limit

    @staticmethod
    def _check_flag(name: str, value) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        raise InvalidQuery(f"{name} must be true or false, not {quote_prefix(value)}")

    def _checked(self, query: SearchQuery) -> SearchQuery:
        """A query validated again (a caller may have built a :class:`SearchQuery` by hand)."""
        if not isinstance(query, SearchQuery):
            raise InvalidQuery(f"search takes a SearchQuery or keyword arguments, not {quote_prefix(query)}")
        return self.query(
            pattern=query.pattern, filters=query.filters, limit=query.limit, page=query.page,
            scope=query.scope if query.scope is not None else "", details=query.details, partial=query.partial,
        )

    # -- the public template methods: validate, then call the hook --------------------------------

    async def search(self, query: SearchQuery | None = None, **raw) -> SearchPage:
        """One page of datasets whose name matches a pattern and whose metadata match filters.

        Pass a :class:`SearchQuery` or the raw fields of :meth:`query` as keyword arguments
        (``search(pattern="run2024*", filters="project=run2024", limit="50")``); either way the
        query is validated before the backend's :meth:`_search` sees it.
        """
        if query is not None and raw:
            raise InvalidQuery("pass either a SearchQuery or keyword arguments, not both")
        return await self._search(self._checked(query) if query is not None else self.query(**raw))

    async def list_files(self, did: str) -> list[DatasetFile] | None:
        """The files of dataset ``did``, or None when there is no such dataset."""
        scope, name = self.check_did(did)
        return await self._list_files(scope, name)

    async def list_files_page(self, did: str, limit=None, page=None) -> tuple[list[DatasetFile], str | None] | None:
        """One page of the files of ``did`` and the next page's token (None on the last page),
        or None when there is no such dataset. Without ``limit``: every file from ``page`` on.

        ``limit`` is checked like a search's (1 to :attr:`max_page_size`); ``page`` is a token
        this method issued (the offset of the page's first file).
        """
        limit = None if limit is None or limit == "" else self._check_limit(limit)
        offset = 0
        if page is not None and page != "":
            if not isinstance(page, str) or not _NUMBER_RE.match(page):
                raise InvalidQuery(f"page token {quote_prefix(page)} was not issued by this catalogue")
            offset = int(page)
        found = await self.list_files(did)
        if found is None:
            return None
        end = len(found) if limit is None else offset + limit
        return found[offset:end], (str(end) if end < len(found) else None)

    async def stage(self, did: str) -> StageRequest | None:
        """Make dataset ``did`` readable from the notebook; None when there is no such dataset.

        Staging a dataset that already has a request returns that request (``reused=True``).
        Checks the quota before creating anything and raises :class:`QuotaExceeded` when the
        dataset would not fit.
        """
        scope, name = self.check_did(did)
        return await self._stage(scope, name)

    async def status(self) -> list[StageRequest]:
        """Every stage-in request of this user, refreshed in bulk (not one call per file)."""
        return await self._status()

    async def cancel(self, request_id: str) -> bool:
        """Cancel one of this user's requests; False when the user has no such request."""
        return await self._cancel(check_request_id(request_id))

    async def get_request(self, request_id: str) -> StageRequest | None:
        """One of this user's requests, or None (also for another user's request id)."""
        return await self._get_request(check_request_id(request_id))

    async def paths(self, request_id: str) -> list[str] | None:
        """Local paths of the files of a request that are ready now, or None (no such request)."""
        return await self._paths(check_request_id(request_id))

    async def publish(self, name: str, files, root: str, metadata=None, inputs=None, notebook=None,
                      executed_notebook=None, parameters=None, jobs=None, environment=None, user=None) -> PublishedDataset:
        """Upload ``files`` (paths inside ``root``, the user's home) and register them as dataset
        ``name`` in the user's :attr:`publish_scope`, with the user's ``metadata`` and the
        provenance (input dataset ids, the notebook and its parameters, the executed notebook,
        the job ids, the environment: this server's packages when not given, the user).

        Everything is checked before anything is written: a refused path or key raises
        :class:`InvalidPublish` and nothing reaches the catalogue. An existing dataset of that
        name is refused (409): a publish never changes what was published before.
        """
        if not self.publish_scope:
            raise CatalogError(f"{self.display_name} does not offer publishing here (no publish scope is set)", status=501)
        scope = self.publish_scope
        name = check_dataset_name(name)
        metadata = check_metadata(metadata)
        if not isinstance(root, str) or not root:
            raise InvalidPublish("publishing needs the user's root folder")
        if isinstance(files, str):
            files = [files]
        if not isinstance(files, (list, tuple)) or not files:
            raise InvalidPublish("give at least one file to publish (paths inside your home)")
        if len(files) > MAX_FILES:
            raise InvalidPublish(f"at most {MAX_FILES} files in one publish, not {len(files)}")
        provenance = Provenance(
            inputs=check_inputs(inputs), parameters=check_parameters(parameters), jobs=check_jobs(jobs),
            environment=check_environment(environment) if environment else await self.run_blocking(current_environment),
            user=check_user(user or {}), published_at=utc_timestamp(),
        )

        def resolve():
            found, names = [], {}
            for path in files:
                real, relative = resolve_user_file(root, path)
                did_name = file_did_name(name, relative)
                if did_name in names:
                    if names[did_name] == relative:
                        continue  # the same file twice
                    raise InvalidPublish(f"files {quote_prefix(names[did_name])} and {quote_prefix(relative)} get the same name {did_name}")
                names[did_name] = relative
                found.append((real, relative, did_name))
            extra = {}
            for key, path in (("notebook", notebook), ("executed_notebook", executed_notebook)):
                if path:
                    extra[key] = resolve_user_file(root, path, key.replace("_", " "))[1]
            return found, extra

        found, notebooks = await self.run_blocking(resolve)
        provenance = Provenance(**{**provenance.to_dict(), **notebooks})
        return await self._publish(scope, name, found, metadata, provenance)

    async def file_checksums(self, did: str) -> list[FileChecksum] | None:
        """The files of ``did`` with their size and checksums as the catalogue knows them, or
        None when there is no such dataset (what an RO-Crate lists)."""
        scope, name = self.check_did(did)
        return await self._file_checksums(scope, name)

    # -- the hooks a backend implements (inputs already validated) --------------------------------

    async def _publish(self, scope: str, name: str, files: list[tuple], metadata: dict, provenance: Provenance) -> PublishedDataset:
        """Upload ``files`` (``(real path, path relative to the root, catalogue file name)``) and
        register them as ``scope:name`` with ``metadata`` and ``provenance.to_metadata()``."""
        raise CatalogError(f"{self.display_name} does not offer publishing", status=501)

    async def _file_checksums(self, scope: str, name: str) -> list[FileChecksum] | None:
        found = await self._list_files(scope, name)
        return None if found is None else [FileChecksum(scope=f.scope, name=f.name, bytes=f.bytes) for f in found]

    async def _search(self, query: SearchQuery) -> SearchPage:
        """One page of results for a validated query."""
        raise NotImplementedError

    async def _list_files(self, scope: str, name: str) -> list[DatasetFile] | None:
        """The files of a checked dataset, or None when there is no such dataset."""
        raise NotImplementedError

    async def _stage(self, scope: str, name: str) -> StageRequest | None:
        """Stage a checked dataset (see :meth:`stage` for the contract)."""
        raise NotImplementedError

    async def _status(self) -> list[StageRequest]:
        """Every request of this user, in bulk."""
        raise NotImplementedError

    async def _cancel(self, request_id: str) -> bool:
        """Cancel a request by a checked id; False when the user has no such request."""
        raise NotImplementedError

    async def _get_request(self, request_id: str) -> StageRequest | None:
        for request in await self._status():
            if request.id == request_id:
                return request
        return None

    async def _paths(self, request_id: str) -> list[str] | None:
        request = await self._get_request(request_id)
        return None if request is None else request.paths

    # -- blocking work -------------------------------------------------------------------------

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The bounded executor (:attr:`max_workers` threads) for this backend's blocking work."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.max_workers, thread_name_prefix=type(self).__name__)
        return self._executor

    async def run_blocking(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` on :attr:`executor`, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    async def close(self) -> None:
        """Release clients and threads (the extension calls this when the server stops)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
