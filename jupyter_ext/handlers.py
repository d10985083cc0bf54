"""Thin REST handlers: parse, authorize, call the backend, serialise.

All subclass jupyter_server's ``APIHandler``, so every error has one JSON shape
(``{"message": ..., "reason": ...}``) and every verb needs an authenticated user.
"""

import json

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

from .. import __version__
from .catalog.base import InvalidQuery
from .catalog.models import InvalidDID

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
        try:
            query = self.catalog.query(
                pattern=self.get_query_argument("pattern", "*"),
                filters=self.get_query_argument("filters", ""),
                limit=self.get_query_argument("limit", "50"),
                page=self.get_query_argument("page", None),
            )
            page = await self.catalog.search(query)
        except InvalidQuery as e:
            raise web.HTTPError(400, str(e)) from None
        self.write_json(page.to_dict())


class DatasetFilesHandler(GatewayHandler):
    @web.authenticated
    @authorized
    async def get(self, did):
        try:
            found = await self.catalog.list_files(did)
        except InvalidDID as e:
            raise web.HTTPError(400, str(e)) from None
        if found is None:
            raise web.HTTPError(404, f"no dataset {did!r} in {self.catalog.display_name}")
        self.write_json({"did": did, "files": [f.to_dict() for f in found]})


#: A DID travels as one URL-encoded path segment (``demo%3Arun2024.raw.0001``), so names holding
#: ``/`` stay one segment; tornado decodes it before the handler sees it.
handlers = [
    ("/?", RootHandler),
    ("/datasets", DatasetsHandler),
    (r"/datasets/(?P<did>[^/]+)/files", DatasetFilesHandler),
]
