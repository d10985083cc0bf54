"""Thin REST handlers: parse, authorize, call the catalogue backend, serialise.

All subclass jupyter_server's ``APIHandler``, so every error has one JSON shape
(``{"message": ..., "reason": ...}``) and every verb needs an authenticated, authorized user.
The routes are described in ``openapi.yaml`` next to this module (a test keeps them in step).
"""

import asyncio
import functools
import json
import os
import time

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from tornado import web
from tornado.iostream import StreamClosedError

from ..core import __version__
from ..core.catalog import CatalogError
from ..core.publish import check_user
from ..core.metrics import server_metrics
from ..core.presets import ENV_VAR as DASK_ENV_VAR, UserDaskConfig
from ..core.text import quote_prefix

AUTH_RESOURCE = "gateway"

#: the largest request body a handler reads (POST /requests holds one DID)
MAX_BODY_BYTES = 64 * 1024
#: the longest URL (path and query) a handler reads
MAX_URL_LENGTH = 16 * 1024
#: how much of a request's URL our log lines show
LOGGED_URL_LENGTH = 200
#: how many items of a long list (a dataset's files) are serialised between two turns of the
#: event loop: a few milliseconds of work, so other requests are answered in between
LIST_CHUNK = 1000
#: the body of POST /requests, as the errors show it
_STAGE_BODY = 'the body must be JSON like {"did": "scope:name"}'


class CatalogCalls:
    """What a handler needs to call the catalogue backend: its metrics, its errors by status, and a
    stage-in as every route starts one (the REST API's and the launch page's)."""

    auth_resource = AUTH_RESOURCE

    def initialize(self, extension):
        self.extension = extension

    @property
    def catalog(self):
        return self.extension.catalog

    @property
    def metrics(self):
        """This server's gateway metrics (:func:`science_gateway.core.metrics.server_metrics`)."""
        return server_metrics(self.settings)

    @property
    def catalog_label(self) -> str:
        """The ``backend`` label of the catalogue's metrics: its class name."""
        return type(self.catalog).__name__

    async def call(self, coro_fn, *args, **kwargs):
        """Run one backend call (it validates its input), answering its errors by their status;
        its time goes into the catalogue call latency, its error into the catalogue errors."""
        call = getattr(coro_fn, "__name__", "call")
        started = time.perf_counter()
        try:
            return await coro_fn(*args, **kwargs)
        except CatalogError as e:
            self.metrics.catalog_errors.labels(self.catalog_label, call, str(e.status)).inc()
            raise web.HTTPError(e.status, str(e)) from None
        except asyncio.CancelledError:
            raise
        except Exception:
            self.metrics.catalog_errors.labels(self.catalog_label, call, "500").inc()
            raise
        finally:
            self.metrics.catalog_latency.labels(self.catalog_label, call).observe(time.perf_counter() - started)

    async def start_stage(self, did: str):
        """Stage ``did`` (a new request, or the user's request for it already in flight), counted
        in the metrics and told to the idle checks; 404 when there is no such dataset."""
        staging = self.metrics.staging_requests
        try:
            request = await self.call(self.catalog.stage, did)
        except web.HTTPError as e:
            staging.labels(self.catalog_label, "refused" if e.status_code < 500 else "error").inc()
            raise
        if request is None:
            staging.labels(self.catalog_label, "not_found").inc()
            self.no_dataset(did)
        staging.labels(self.catalog_label, "reused" if request.reused else "created").inc()
        if not request.reused:
            self.metrics.bytes_staged.labels(self.catalog_label).inc(request.bytes_total or 0)
            self.extension.staging_started()
        return request

    def no_dataset(self, did):
        raise web.HTTPError(404, f"no dataset {quote_prefix(did)} in {self.catalog.display_name}")


class GatewayHandler(CatalogCalls, APIHandler):

    # -- before a handler runs: authentication that says how to log in, bounded input ------------

    async def prepare(self):
        try:
            await super().prepare()
        except web.HTTPError as e:
            if e.status_code == 403 and not e.log_message and not self.current_user:
                raise web.HTTPError(403, self.login_hint()) from None
            raise
        if len(self.request.uri) > MAX_URL_LENGTH:
            raise web.HTTPError(414, f"the URL is {len(self.request.uri)} characters long; at most {MAX_URL_LENGTH} are read")
        if len(self.request.body or b"") > MAX_BODY_BYTES:
            raise web.HTTPError(
                413, f"the request body is {len(self.request.body)} bytes; at most {MAX_BODY_BYTES} are read ({_STAGE_BODY})"
            )

    def login_hint(self) -> str:
        hub = os.environ.get("JUPYTERHUB_BASE_URL")
        where = f"{hub.rstrip('/')}/hub/login" if hub else "the server's login page"
        return (
            f"not logged in: open {where} in your browser first (then this URL works there), or send "
            "the header 'Authorization: token <API token>' ($JUPYTERHUB_API_TOKEN in a notebook)"
        )

    def _browser_navigation(self) -> bool:
        """A person opening the URL in a browser tab (no API credentials), not a script."""
        headers = self.request.headers
        return (
            self.request.method in ("GET", "HEAD")
            and "Authorization" not in headers
            and (headers.get("Sec-Fetch-Mode") == "navigate" or "text/html" in headers.get("Accept", ""))
        )

    def get_login_url(self) -> str:
        """Browsers go through the login, like jupyter_server's pages; scripts get a 403 saying how."""
        if not self.current_user:
            if self._browser_navigation():
                return JupyterHandler.get_login_url(self)
            raise web.HTTPError(403, self.login_hint())
        return super().get_login_url()

    # -- log lines stay short whatever the client sent ------------------------------------------

    def _request_summary(self) -> str:
        uri = self.request.uri or ""
        if len(uri) > LOGGED_URL_LENGTH:
            uri = uri[:LOGGED_URL_LENGTH] + f"...({len(uri)} characters)"
        return f"{self.request.method} {uri} ({self.request.remote_ip})"

    def _log(self) -> None:
        # jupyter_server's log_request writes the URI and, for errors, the Referer (and for 5xx
        # Host, Accept, User-Agent): cut them all, the request is finished
        uri = self.request.uri or ""
        if len(uri) > LOGGED_URL_LENGTH:
            self.request.uri = uri[:LOGGED_URL_LENGTH] + f"...({len(uri)} characters)"
        for name in ("Referer", "Host", "Accept", "User-Agent"):
            value = self.request.headers.get(name, "")
            if len(value) > LOGGED_URL_LENGTH:
                self.request.headers[name] = value[:LOGGED_URL_LENGTH] + f"...({len(value)} characters)"
        super()._log()

    # -- answers ---------------------------------------------------------------------------------

    def write_json(self, payload, status=200):
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(payload))

    async def write_json_list(self, head: dict, key: str, items: list, chunk: int = LIST_CHUNK):
        """``write_json({**head, key: [item.to_dict() for item in items]})``, streamed in slices of
        ``chunk`` items with the event loop free in between (a dataset can hold 100,000 files:
        serialising them in one go would hold every other request of the server for a second)."""
        if len(items) <= chunk:
            return self.write_json({**head, key: [item.to_dict() for item in items]})
        self.set_header("Content-Type", "application/json")
        prefix = json.dumps(head)[:-1]
        self.write(f"{prefix}{', ' if head else ''}{json.dumps(key)}: [")
        for start in range(0, len(items), chunk):
            part = json.dumps([item.to_dict() for item in items[start:start + chunk]])[1:-1]
            self.write(part if start == 0 else "," + part)
            try:
                await self.flush()  # to the client now
            except StreamClosedError:
                return  # the client went away: nobody to answer
            await asyncio.sleep(0)  # a turn of the loop for other requests (a flush may finish at once)
        self.finish("]}")

    def json_body(self) -> dict:
        """The request body as a JSON object, or a 400 that says what was wrong."""
        try:
            body = json.loads(self.request.body or b"{}")
        except (ValueError, RecursionError):
            raise web.HTTPError(400, f"the body is not JSON: {_STAGE_BODY}") from None
        if not isinstance(body, dict):
            raise web.HTTPError(400, f"the body is JSON {type(body).__name__}, not an object: {_STAGE_BODY}")
        return body

    def no_request(self, request_id):
        raise web.HTTPError(
            404, f"no request {quote_prefix(request_id)} of yours in {self.catalog.display_name}; GET requests lists yours"
        )


class RootHandler(GatewayHandler):
    @web.authenticated
    @authorized
    async def get(self):
        self.write_json(
            {
                "name": "science-gateway",
                "version": __version__,
                "catalog": {"name": self.catalog.display_name, "type": type(self.catalog).__name__},
                "token": self.extension.token_keeper.describe(),
            }
        )


class DatasetsHandler(GatewayHandler):
    @web.authenticated
    @authorized
    async def get(self):
        page = await self.call(
            self.catalog.search,
            pattern=self.get_query_argument("pattern", "*"),
            filters=self.get_query_argument("filters", ""),
            limit=self.get_query_argument("limit", "50"),
            page=self.get_query_argument("page", None),
            scope=self.get_query_argument("scope", None),
            details=self.get_query_argument("details", "true"),
            partial=self.get_query_argument("partial", "false"),
        )
        self.write_json(page.to_dict())


class DatasetFilesHandler(GatewayHandler):
    @web.authenticated
    @authorized
    async def get(self, did):
        found = await self.call(
            self.catalog.list_files_page, did,
            limit=self.get_query_argument("limit", None), page=self.get_query_argument("page", None),
        )
        if found is None:
            self.no_dataset(did)
        files, next_page = found
        await self.write_json_list({"did": did, "next": next_page}, "files", files)


@functools.lru_cache(maxsize=4)
def dask_presets_answer(raw: str | None) -> dict:
    """The answer of GET /dask/presets for the hub's presets ``raw`` (the environment variable).

    Built once per value (it is set at spawn and does not change): building the presets is
    milliseconds of work that every call would otherwise do on the event loop.
    """
    return UserDaskConfig.from_environ({DASK_ENV_VAR: raw} if raw else {}).describe()


class DaskPresetsHandler(GatewayHandler):
    """The Dask presets this user may use, with their limits (what the hub handed the server)."""

    @web.authenticated
    @authorized
    async def get(self):
        try:
            answer = dask_presets_answer(os.environ.get(DASK_ENV_VAR))
        except ValueError as e:
            raise web.HTTPError(500, f"the server's Dask presets are unreadable: {e}") from None
        self.write_json(answer)


class RequestsHandler(GatewayHandler):
    @web.authenticated
    @authorized
    async def get(self):
        requests = await self.call(self.catalog.status)
        self.write_json({"requests": [r.to_dict() for r in requests], "notice": self.catalog.status_notice})

    @web.authenticated
    @authorized
    async def post(self):
        body = self.json_body()
        unknown = sorted(set(body) - {"did"})
        if unknown:
            raise web.HTTPError(400, f"unknown key {quote_prefix(unknown[0])} in the body: {_STAGE_BODY}")
        did = body.get("did")
        if not isinstance(did, str):
            raise web.HTTPError(400, f"'did' is {quote_prefix(did)}, not text: {_STAGE_BODY}")
        request = await self.start_stage(did)
        self.set_header("Location", self.request.path.rstrip("/") + "/" + request.id)
        self.write_json(request.to_dict(), status=200 if request.reused else 201)


#: the keys of POST /publish, as the errors show them
_PUBLISH_KEYS = ("name", "files", "metadata", "inputs", "notebook", "executed_notebook", "parameters", "jobs", "environment")
_PUBLISH_BODY = 'the body must be JSON like {"name": "results.v1", "files": ["out/result.csv"], "metadata": {"key": "value"}}'
#: the keys of POST /crates
_CRATE_KEYS = ("dest", "notebook", "executed_notebook", "parameters", "inputs", "outputs", "jobs", "environment",
               "title", "description", "license", "zip")
_CRATE_BODY = 'the body must be JSON like {"dest": "crates/run1", "outputs": ["user.me:results.v1"], "notebook": "analysis.ipynb"}'


class _ProvenanceHandler(GatewayHandler):
    """What POST /publish and POST /crates share: a body of known keys, the user's root and identity."""

    def body_of(self, keys, example) -> dict:
        body = self.json_body()
        unknown = sorted(set(body) - set(keys))
        if unknown:
            raise web.HTTPError(400, f"unknown key {quote_prefix(unknown[0])} in the body: {example}")
        return body

    @property
    def root_dir(self) -> str:
        """The user's Jupyter root: every path of a publish or a crate stays inside it."""
        return self.settings.get("server_root_dir") or os.path.expanduser("~")

    def identity(self) -> dict:
        """The user as the gateway knows them (the hub's user name), never what the body says."""
        user = self.current_user
        name = getattr(user, "username", None) or getattr(user, "name", None) or os.environ.get("JUPYTERHUB_USER", "")
        try:
            return check_user({"name": name}) if name else {}
        except CatalogError:  # a name the provenance cannot hold as it is: recorded without it
            self.log.warning("user name %s cannot be recorded in provenance", quote_prefix(name))
            return {}


class PublishHandler(_ProvenanceHandler):
    """Upload files of the user's home to the catalogue as a dataset in their own scope."""

    @web.authenticated
    @authorized
    async def post(self):
        body = self.body_of(_PUBLISH_KEYS, _PUBLISH_BODY)
        published = await self.call(
            self.catalog.publish, body.get("name"), body.get("files"), self.root_dir,
            metadata=body.get("metadata"), inputs=body.get("inputs"), notebook=body.get("notebook"),
            executed_notebook=body.get("executed_notebook"), parameters=body.get("parameters"),
            jobs=body.get("jobs"), environment=body.get("environment"), user=self.identity(),
        )
        self.write_json(published.to_dict(), status=201)


class CratesHandler(_ProvenanceHandler):
    """Export a run as an RO-Crate into a new folder (or .zip) of the user's home."""

    @web.authenticated
    @authorized
    async def post(self):
        from .crate import export_run

        body = self.body_of(_CRATE_KEYS, _CRATE_BODY)
        if "dest" not in body:
            raise web.HTTPError(400, f"'dest' is missing: {_CRATE_BODY}")
        kwargs = {k: body[k] for k in _CRATE_KEYS if k in body and k not in ("dest", "zip")}
        try:
            answer = await self.call(
                export_run, self.catalog, self.root_dir, body["dest"], as_zip=body.get("zip", False),
                user=self.identity(), **kwargs,
            )
        except ImportError:
            raise web.HTTPError(501, "RO-Crate export needs the rocrate package (pip install 'science-gateway[rocrate]')") from None
        self.write_json(answer, status=201)


class RequestHandler(GatewayHandler):
    @web.authenticated
    @authorized
    async def get(self, request_id):
        request = await self.call(self.catalog.get_request, request_id)
        if request is None:
            self.no_request(request_id)
        self.write_json(request.to_dict())

    @web.authenticated
    @authorized
    async def delete(self, request_id):
        cancelled = await self.call(self.catalog.cancel, request_id)
        if not cancelled:
            self.no_request(request_id)
        self.set_status(204)
        self.finish()


class RequestPathsHandler(GatewayHandler):
    @web.authenticated
    @authorized
    async def get(self, request_id):
        paths = await self.call(self.catalog.paths, request_id)
        if paths is None:
            self.no_request(request_id)
        self.write_json({"id": request_id, "paths": paths})


class MetricsHandler(GatewayHandler):
    """This server's gateway metrics in Prometheus' text format (for the user's or an admin's
    scraper: it needs the same authentication as the rest of the API)."""

    #: a scrape is not the user's activity: it must not keep an idle server from the culler
    _track_activity = False

    @web.authenticated
    @authorized
    async def get(self):
        self.finish(generate_latest(self.metrics.registry), set_content_type=CONTENT_TYPE_LATEST)


class SessionHandler(GatewayHandler):
    """When the server's batch job ends, and a warning once its walltime is near (jupyter_ext.session)."""

    #: JupyterLab asks this now and then: that is not the user's activity
    _track_activity = False

    @web.authenticated
    @authorized
    async def get(self):
        warn_before = 60 * self.extension.walltime_warning_minutes
        self.write_json(await self.extension.session.describe(warn_before))


#: (route under {base_url}/gateway/api, handler); openapi.yaml describes each. A DID travels
#: URL-encoded (``demo%3Arun2024.raw.0001``); tornado decodes it before the handler sees it, and
#: the handler validates it (a name holding ``/`` may come encoded or not).
handlers = [
    ("/?", RootHandler),
    ("/datasets", DatasetsHandler),
    (r"/datasets/(?P<did>.+)/files", DatasetFilesHandler),
    ("/requests", RequestsHandler),
    (r"/requests/(?P<request_id>[^/]+)", RequestHandler),
    (r"/requests/(?P<request_id>[^/]+)/paths", RequestPathsHandler),
    ("/publish", PublishHandler),
    ("/crates", CratesHandler),
    ("/dask/presets", DaskPresetsHandler),
    ("/metrics", MetricsHandler),
    ("/session", SessionHandler),
]
