"""Thin REST handlers: parse, authorize, call the catalogue backend, serialise.

All subclass jupyter_server's ``APIHandler``, so every error has one JSON shape
(``{"message": ..., "reason": ...}``) and every verb needs an authenticated, authorized user.
The routes are described in ``openapi.yaml`` next to this module (a test keeps them in step).
"""

import json
import os

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

from ..core import __version__
from ..core.catalog import CatalogError, InvalidDID, check_request_id
from ..core.presets import UserDaskConfig

AUTH_RESOURCE = "gateway"


class GatewayHandler(APIHandler):
    auth_resource = AUTH_RESOURCE

    def initialize(self, extension):
        self.extension = extension

    @property
    def catalog(self):
        return self.extension.catalog

    def write_json(self, payload, status=200):
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(payload))

    async def call(self, coro_fn, *args, **kwargs):
        """Run one backend call, turning its user-facing errors into JSON 4xx/5xx answers."""
        try:
            return await coro_fn(*args, **kwargs)
        except InvalidDID as e:
            raise web.HTTPError(400, str(e)) from None
        except CatalogError as e:
            raise web.HTTPError(e.status, str(e)) from None

    def request_id(self, request_id):
        try:
            return check_request_id(request_id)
        except InvalidDID as e:
            raise web.HTTPError(400, str(e)) from None

    def no_dataset(self, did):
        raise web.HTTPError(404, f"no dataset {did!r} in {self.catalog.display_name}")

    def no_request(self, request_id):
        raise web.HTTPError(
            404, f"no request {request_id!r} of yours in {self.catalog.display_name}; GET requests lists yours"
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
        def query():
            return self.catalog.query(
                pattern=self.get_query_argument("pattern", "*"),
                filters=self.get_query_argument("filters", ""),
                limit=self.get_query_argument("limit", "50"),
                page=self.get_query_argument("page", None),
                scope=self.get_query_argument("scope", None),
                details=self.get_query_argument("details", "true"),
            )

        async def search():
            return await self.catalog.search(query())

        page = await self.call(search)
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
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, 'the body must be JSON like {"did": "scope:name"}') from None
        did = body.get("did") if isinstance(body, dict) else None
        if not isinstance(did, str):
            raise web.HTTPError(400, 'the body must be JSON like {"did": "scope:name"}')
        request = await self.call(self.catalog.stage, did)
        if request is None:
            self.no_dataset(did)
        self.set_header("Location", self.request.path.rstrip("/") + "/" + request.id)
        self.write_json(request.to_dict(), status=200 if request.reused else 201)


class RequestHandler(GatewayHandler):
    @web.authenticated
    @authorized
    async def get(self, request_id):
        request = await self.call(self.catalog.get_request, self.request_id(request_id))
        if request is None:
            self.no_request(request_id)
        self.write_json(request.to_dict())

    @web.authenticated
    @authorized
    async def delete(self, request_id):
        cancelled = await self.call(self.catalog.cancel, self.request_id(request_id))
        if not cancelled:
            self.no_request(request_id)
        self.set_status(204)
        self.finish()


class RequestPathsHandler(GatewayHandler):
    @web.authenticated
    @authorized
    async def get(self, request_id):
        paths = await self.call(self.catalog.paths, self.request_id(request_id))
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
