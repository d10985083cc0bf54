"""Find and stage data from a notebook or a script: ``from science_gateway import catalog``.

    from science_gateway import catalog

    page = catalog.search("run2024*", filters="project=run2024, datatype=RAW")
    request = catalog.stage(page.datasets[0].did)
    request = catalog.wait(request)            # or: await catalog.wait_async(request)
    for path in catalog.paths(request):
        ...

    # results back: files of your home as a dataset in your own scope, with provenance
    published = catalog.publish("crab.flux.v1", ["out/flux.csv"], metadata={"analysis": "crab-flux"},
                                inputs=[page.datasets[0].did], notebook="analysis.ipynb",
                                parameters={"threshold": 0.5})
    catalog.search(filters="analysis=crab-flux")        # finds it
    crate = catalog.export_crate("crates/crab-flux", published=published)   # an RO-Crate of the run

This is a client of the REST API of the user's own Jupyter server (``{base_url}/gateway/api/``),
so a request made here is the same request the widgets and other kernels see, and it outlives the
kernel. Where the server is found, in order:

1. the ``url``/``token`` arguments of :class:`Catalog`;
2. ``$SCIENCE_GATEWAY_API_URL`` (the server's base URL) and ``$SCIENCE_GATEWAY_API_TOKEN``;
3. inside a JupyterHub single-user server: ``$JUPYTERHUB_SERVICE_URL`` and
   ``$JUPYTERHUB_API_TOKEN``, which JupyterHub sets for the server and its kernels.

Every call has an ``async`` twin (``search_async``, ``stage_async``, ...) that runs the HTTP call
in a thread, so it never blocks the kernel's event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request

from .core.catalog import DatasetFile, SearchPage, StageRequest
from .core.publish import PublishedDataset

API_PATH = "gateway/api"


class CatalogAPIError(Exception):
    """The gateway answered with an error; ``message`` says what to do, ``status`` is the HTTP code."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{message} (HTTP {status})")
        self.status = status
        self.message = message


def _request_id(request) -> str:
    return request.id if isinstance(request, StageRequest) else str(request)


class _Waiting:
    """What :meth:`Catalog.wait` and :meth:`Catalog.wait_async` share: progress, done, deadline."""

    def __init__(self, timeout: float | None, on_progress):
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.on_progress = on_progress

    def unavailable(self, error: "CatalogAPIError") -> bool:
        """True for an answer worth waiting through (503: the catalogue does not answer now),
        while the deadline allows; False for any other error (the caller raises it)."""
        if error.status != 503:
            return False
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise TimeoutError(f"{error.message} (still after {self.timeout} s)") from None
        return True

    def finished(self, current: StageRequest) -> bool:
        """True once ``current`` is done; TimeoutError past the deadline."""
        if self.on_progress is not None:
            self.on_progress(current)
        if current.done:
            return True
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise TimeoutError(f"{current.did}: {current.message} after {self.timeout} s")
        return False


class Catalog:
    """The gateway's catalogue, through the user's own Jupyter server."""

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 60.0):
        env = os.environ
        url = url or env.get("SCIENCE_GATEWAY_API_URL") or env.get("JUPYTERHUB_SERVICE_URL")
        if not url:
            raise RuntimeError(
                "cannot find the Jupyter server: pass Catalog(url=..., token=...) or set "
                "SCIENCE_GATEWAY_API_URL (JupyterHub sets JUPYTERHUB_SERVICE_URL for you)"
            )
        self.url = url.rstrip("/") + "/" + API_PATH
        self.token = token or env.get("SCIENCE_GATEWAY_API_TOKEN") or env.get("JUPYTERHUB_API_TOKEN") or ""
        self.timeout = timeout
        #: the notice of the last :meth:`requests` answer: "" when that status was fresh, else
        #: why not (the catalogue did not answer; the requests shown are its last status)
        self.notice = ""

    def _call(self, method: str, path: str, params: dict | None = None, body: dict | None = None):
        url = self.url + path
        if params:
            url += "?" + urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"token {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read() or b"{}").get("message") or e.reason
            except ValueError:
                message = e.reason
            raise CatalogAPIError(e.code, str(message)) from None
        return json.loads(raw) if raw else None

    # -- the API -------------------------------------------------------------------------------

    def search(self, pattern: str = "*", filters: str | dict | None = None, scope: str | None = None,
               limit: int = 50, page: str | None = None, details: bool = True, partial: bool = False) -> SearchPage:
        """One page of datasets; ``filters`` as ``"project=run2024, datatype=RAW"`` or a dict.

        ``details=False`` skips each result's full metadata and availability (faster).
        ``partial=True`` answers once sizes and availability are known: datasets whose metadata
        is still on its way have ``metadata_pending`` set, and the same search again returns them
        complete."""
        if isinstance(filters, dict):
            filters = ", ".join(f"{k}={v}" for k, v in filters.items())
        params = {"pattern": pattern, "filters": filters, "scope": scope, "limit": limit, "page": page,
                  "details": "true" if details else "false", "partial": "true" if partial else "false"}
        return SearchPage.from_dict(self._call("GET", "/datasets", params))

    def files(self, did: str) -> list[DatasetFile]:
        found = self._call("GET", f"/datasets/{urllib.parse.quote(did, safe=':/')}/files")
        return [DatasetFile(scope=f["scope"], name=f["name"], bytes=f.get("bytes")) for f in found["files"]]

    def stage(self, did: str) -> StageRequest:
        """Make a dataset readable from the notebook; staging it again returns the same request."""
        return StageRequest.from_dict(self._call("POST", "/requests", body={"did": did}))

    def requests(self) -> list[StageRequest]:
        """All of your requests, with their progress."""
        answer = self._call("GET", "/requests")
        self.notice = answer.get("notice") or ""
        return [StageRequest.from_dict(r) for r in answer["requests"]]

    def status(self, request) -> StageRequest:
        return StageRequest.from_dict(self._call("GET", f"/requests/{_request_id(request)}"))

    def paths(self, request) -> list[str]:
        """Local paths of the request's files that are ready now."""
        return self._call("GET", f"/requests/{_request_id(request)}/paths")["paths"]

    def cancel(self, request) -> None:
        self._call("DELETE", f"/requests/{_request_id(request)}")

    def wait(self, request, timeout: float | None = None, interval: float = 2.0, on_progress=None) -> StageRequest:
        """Poll until the request is ready or failed; ``on_progress(request)`` sees each update.

        While the catalogue does not answer (503), it keeps waiting (the request goes on there)."""
        waiting = _Waiting(timeout, on_progress)
        while True:
            current = self._status_while_waiting(request, waiting)
            if current is not None and waiting.finished(current):
                return current
            time.sleep(interval)

    def _status_while_waiting(self, request, waiting: _Waiting) -> StageRequest | None:
        """The request's status, or None while the catalogue does not answer (503)."""
        try:
            return self.status(request)
        except CatalogAPIError as e:
            if waiting.unavailable(e):
                return None
            raise

    def publish(self, name: str, files, metadata: dict | str | None = None, inputs=None, notebook: str | None = None,
                executed_notebook: str | None = None, parameters: dict | None = None, jobs=None,
                environment: dict | None = None) -> PublishedDataset:
        """Upload ``files`` (paths in your home; relative ones from the current folder) and
        register them as dataset ``name`` in your own scope, with your ``metadata`` (``key:
        value`` text: a later ``search(filters=...)`` finds it) and the provenance: the input
        dataset ids, the notebook and its parameters, the executed notebook, the job ids and the
        environment (by default this kernel's packages). The gateway adds who you are.

        A run record of a notebook batch job holds all of these: pass its fields along."""
        body = {
            "name": name, "files": [_path(f) for f in ([files] if isinstance(files, (str, os.PathLike)) else files)],
            "metadata": _pairs(metadata), "inputs": _dids(inputs), "parameters": parameters or {},
            "jobs": [str(j) for j in (jobs or [])],
            "environment": environment if environment is not None else _kernel_environment(),
        }
        for key, value in (("notebook", notebook), ("executed_notebook", executed_notebook)):
            if value:
                body[key] = _path(value)
        return PublishedDataset.from_dict(self._call("POST", "/publish", body=body))

    def export_crate(self, dest: str, published: PublishedDataset | None = None, outputs=None, inputs=None,
                     notebook: str | None = None, executed_notebook: str | None = None, parameters: dict | None = None,
                     jobs=None, environment: dict | None = None, title: str | None = None,
                     description: str | None = None, license: str = "CC-BY-4.0", zip: bool = False) -> dict:
        """Write an RO-Crate 1.1 of a run to the new folder ``dest`` (``zip=True``: ``dest.zip``)
        in your home: the notebook and executed notebook copied in, the parameters, the input
        and output datasets with every file's checksums, the job ids, the environment and you.

        ``published`` (what :meth:`publish` returned) fills what is not given: its dataset as the
        output, its recorded inputs, notebook, parameters, jobs and environment. Returns
        ``{"path": ..., "metadata": <the crate's ro-crate-metadata.json>}``."""
        prov = published.provenance if published is not None else None
        outputs = _dids(outputs) if outputs is not None else ([published.did] if published is not None else [])
        body = {
            "dest": _path(dest), "outputs": outputs,
            "inputs": _dids(inputs) if inputs is not None else (list(prov.inputs) if prov else []),
            "parameters": parameters if parameters is not None else (dict(prov.parameters) if prov else {}),
            "jobs": [str(j) for j in (jobs if jobs is not None else (prov.jobs if prov else []))],
            "license": license, "zip": bool(zip),
        }
        env = environment if environment is not None else (dict(prov.environment) if prov else None)
        if env:
            body["environment"] = env
        root_relative = published is not None and prov is not None
        for key, value, recorded in (("notebook", notebook, prov.notebook if prov else None),
                                     ("executed_notebook", executed_notebook, prov.executed_notebook if prov else None)):
            if value:
                body[key] = _path(value)
            elif root_relative and recorded:
                body[key] = recorded  # as the server recorded it: relative to your home
        for key, value in (("title", title), ("description", description)):
            if value:
                body[key] = value
        return self._call("POST", "/crates", body=body)

    # -- async twins ---------------------------------------------------------------------------

    async def search_async(self, *args, **kwargs) -> SearchPage:
        return await asyncio.to_thread(self.search, *args, **kwargs)

    async def files_async(self, did: str) -> list[DatasetFile]:
        return await asyncio.to_thread(self.files, did)

    async def stage_async(self, did: str) -> StageRequest:
        return await asyncio.to_thread(self.stage, did)

    async def requests_async(self) -> list[StageRequest]:
        return await asyncio.to_thread(self.requests)

    async def status_async(self, request) -> StageRequest:
        return await asyncio.to_thread(self.status, request)

    async def paths_async(self, request) -> list[str]:
        return await asyncio.to_thread(self.paths, request)

    async def cancel_async(self, request) -> None:
        await asyncio.to_thread(self.cancel, request)

    async def publish_async(self, *args, **kwargs) -> PublishedDataset:
        return await asyncio.to_thread(self.publish, *args, **kwargs)

    async def export_crate_async(self, *args, **kwargs) -> dict:
        return await asyncio.to_thread(self.export_crate, *args, **kwargs)

    async def wait_async(self, request, timeout: float | None = None, interval: float = 2.0, on_progress=None) -> StageRequest:
        """Like :meth:`wait`, without blocking the event loop (use it from widgets and ``await``)."""
        waiting = _Waiting(timeout, on_progress)
        while True:
            current = await asyncio.to_thread(self._status_while_waiting, request, waiting)
            if current is not None and waiting.finished(current):
                return current
            await asyncio.sleep(interval)


def _path(path) -> str:
    """A path for the server: absolute (relative ones from this kernel's current folder); the
    server refuses anything outside your home."""
    return os.path.abspath(os.fspath(path))


def _pairs(metadata) -> dict:
    if metadata is None:
        return {}
    if isinstance(metadata, str):
        pairs = {}
        for part in filter(None, (p.strip() for p in metadata.split(","))):
            key, _, value = part.partition("=")
            pairs[key.strip()] = value.strip()
        return pairs
    return dict(metadata)


def _dids(dids) -> list:
    if dids is None:
        return []
    if isinstance(dids, str):
        return [d.strip() for d in dids.split(",") if d.strip()]
    return [getattr(d, "did", d) for d in dids]


def _kernel_environment() -> dict:
    from .core.publish import current_environment

    return current_environment()


_default: Catalog | None = None


def default() -> Catalog:
    """The :class:`Catalog` of the server this kernel belongs to (made on first use)."""
    global _default
    if _default is None:
        _default = Catalog()
    return _default


def search(*args, **kwargs) -> SearchPage:
    return default().search(*args, **kwargs)


def files(did: str) -> list[DatasetFile]:
    return default().files(did)


def stage(did: str) -> StageRequest:
    return default().stage(did)


def requests() -> list[StageRequest]:
    return default().requests()


def status(request) -> StageRequest:
    return default().status(request)


def paths(request) -> list[str]:
    return default().paths(request)


def cancel(request) -> None:
    default().cancel(request)


def wait(request, timeout: float | None = None, interval: float = 2.0, on_progress=None) -> StageRequest:
    return default().wait(request, timeout=timeout, interval=interval, on_progress=on_progress)


async def wait_async(request, timeout: float | None = None, interval: float = 2.0, on_progress=None) -> StageRequest:
    return await default().wait_async(request, timeout=timeout, interval=interval, on_progress=on_progress)


def publish(*args, **kwargs) -> PublishedDataset:
    return default().publish(*args, **kwargs)


def export_crate(*args, **kwargs) -> dict:
    return default().export_crate(*args, **kwargs)


__all__ = [
    "Catalog", "CatalogAPIError", "cancel", "default", "export_crate", "files", "paths", "publish",
    "requests", "search", "stage", "status", "wait", "wait_async",
]
