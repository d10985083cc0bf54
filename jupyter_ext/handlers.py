"""Thin REST handlers: parse, authorize, call the catalogue backend, serialise.

All subclass jupyter_server's ``APIHandler``, so every error has one JSON shape
(``{"message": ..., "reason": ...}``) and every verb needs an authenticated, authorized user.
The routes are described in ``openapi.yaml`` next to this module (a test keeps them in step).
"""

import json
import os

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from tornado import web

from ..core import __version__
from ..core.catalog import CatalogError
from ..core.presets import UserDaskConfig
from ..core.text import quote_prefix

AUTH_RESOURCE = "gateway"

#: the largest request body a handler reads (POST /requests holds one DID)
MAX_BODY_BYTES = 64 * 1024
#: the longest URL (path and query) a handler reads
MAX_URL_LENGTH = 16 * 1024
#: how much of a request's URL our log lines show
LOGGED_URL_LENGTH = 200
#: the body of POST /requests, as the errors show it
_STAGE_BODY = 'the body must be JSON like {"did": "scope:name"}'


class GatewayHandler(APIHandler):
    auth_resource = AUTH_RESOURCE

    def initialize(self, extension):
        self.extension = extension

    @property
    def catalog(self):
        return self.extension.catalog

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

    async def call(self, coro_fn, *args, **kwargs):
        """Run one backend call (it validates its input), answering its errors by their status."""
        try:
            return await coro_fn(*args, **kwargs)
        except CatalogError as e:
            raise web.HTTPError(e.status, str(e)) from None

    def json_body(self) -> dict:
        """The request body as a JSON object, or a 400 that says what was wrong."""
        try:
            body = json.loads(self.request.body or b"{}")
        except (ValueError, RecursionError):
            raise web.HTTPError(400, f"the body is not JSON: {_STAGE_BODY}") from None
        if not isinstance(body, dict):
            raise web.HTTPError(400, f"the body is JSON {type(body).__name__}, not an object: {_STAGE_BODY}")
        return body

    def no_dataset(self, did):
        raise web.HTTPError(404, f"no dataset {quote_prefix(did)} in {self.catalog.display_name}")

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
        found = await self.call(self.catalog.list_files, did)
        if found is None:
            self.no_dataset(did)
        self.write_json({"did": did, "files": [f.to_dict() for f in found]})


class DaskPresetsHandler(GatewayHandler):
    """The Dask presets this user may use, with their limits (what the hub handed the server)."""

    @web.authenticated
    @authorized
    async def get(self):
        try:
            user = UserDaskConfig.from_environ(os.environ)
        except ValueError as e:
            raise web.HTTPError(500, f"the server's Dask presets are unreadable: {e}") from None
        self.write_json(user.describe())


class RequestsHandler(GatewayHandler):
    @web.authenticated
    @authorized
    async def get(self):
        requests = await self.call(self.catalog.status)
        self.write_json({"requests": [r.to_dict() for r in requests]})

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
        request = await self.call(self.catalog.stage, did)
        if request is None:
            self.no_dataset(did)
        self.set_header("Location", self.request.path.rstrip("/") + "/" + request.id)
        self.write_json(request.to_dict(), status=200 if request.reused else 201)


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
    ("/dask/presets", DaskPresetsHandler),
]
