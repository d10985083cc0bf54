"""Dask clusters held by the user's Jupyter server, for JupyterLab's side panel (a server extension).

A cluster started from the panel must outlive the request that started it and be there when the
panel is opened again, with no kernel of the user's involved: the user's own server holds it, as
dask-labextension does, under ``{base_url}/gateway/api/dask/clusters`` (``openapi.yaml`` in
``science_gateway.jupyter_ext`` describes the routes with the others). The clusters are the same
:func:`~science_gateway.dask.cluster` objects a notebook makes, from the same presets and limits
(the user's own server runs as the user; nothing here reaches beyond what a kernel of theirs may
do), so the worker jobs, their account and identity, TLS and the guarded dashboard are the same.

Closing a cluster cancels its worker jobs; the server's stop closes every cluster it holds (and the
Slurm spawner cancels a session's worker jobs by name when the session ends).

While the server holds a running cluster it counts as active for the hub's idle culler (a busy
source of ``science_gateway.jupyter_ext.activity``), and its clusters, scale requests and requested
workers are in the server's gateway metrics (``GET /gateway/api/metrics``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import secrets
import sys

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.application import ExtensionApp
from tornado import web
from traitlets import Float, Integer

from ..core.activity import register_busy_source
from ..core.metrics import ServerMetrics, server_metrics
from ..core.presets import DaskPresetError
from ..core.text import quote_prefix
from .builders import DaskLimitError

#: the same authorization resource as the rest of the gateway's REST API
AUTH_RESOURCE = "gateway"
_CREATE_BODY = 'the body must be JSON like {"preset": "small"} or {"preset": "small", "workers": 2}'
_SCALE_BODY = 'the body must be JSON like {"workers": 4}'
#: the largest body and URL these handlers read (a body holds a preset name and a number)
MAX_BODY_BYTES = 4096
MAX_URL_LENGTH = 2048
#: a cluster id, as the manager makes them
_CLUSTER_ID = re.compile(r"[0-9]{1,9}-[0-9a-f]{6}")


class ClusterManager:
    """The clusters this server holds for its user, by id (what the handlers call)."""

    def __init__(self, *, max_clusters: int, start_timeout: float, metrics: ServerMetrics | None = None):
        self.max_clusters = max_clusters
        self.start_timeout = start_timeout
        self.metrics = metrics if metrics is not None else ServerMetrics()
        self.metrics.dask_workers_requested.set_function(self.requested_workers)
        self.clusters: dict = {}
        self._numbers = itertools.count(1)
        self._lock = asyncio.Lock()
        self._path = list(sys.path)

    def _tidy_path(self) -> None:
        """With no cluster left, no Dask scratch folder belongs on ``sys.path`` (see _forget_scratch)."""
        if not self.clusters:
            sys.path[:] = [p for p in sys.path if p in self._path or "dask-scratch-space" not in p]

    @staticmethod
    def _make(preset: str):
        from .clusters import cluster  # dask and dask-jobqueue: imported when a cluster is wanted

        return cluster(preset, asynchronous=True)

    async def start(self, preset: str, workers: int = 0):
        """A new running cluster of ``preset`` (``workers`` asked for at once), or the reason why not."""
        async with self._lock:
            self._forget_closed()
            if len(self.clusters) >= self.max_clusters:
                raise DaskLimitError(
                    f"this server holds {len(self.clusters)} Dask clusters already, the most it keeps "
                    f"({self.max_clusters}): close one first"
                )
            cluster = self._make(preset)  # an unknown preset raises here
            try:
                # beyond the limits: refused before a scheduler starts
                cluster._check_and_reserve(workers)
                await asyncio.wait_for(_started(cluster), self.start_timeout)
                if workers:
                    cluster.scale(workers)
            except BaseException:
                await _close_quietly(cluster)
                raise
            cluster_id = f"{next(self._numbers)}-{secrets.token_hex(3)}"
            self.clusters[cluster_id] = cluster
            self.metrics.dask_clusters_started.labels(preset).inc()
            if workers:
                self.metrics.dask_scale_requests.labels(preset).inc()
            return cluster_id, cluster

    def running(self) -> bool:
        """Whether a cluster this server holds is running (the idle culler's busy source)."""
        return any(c.status.name == "running" for c in list(self.clusters.values()))

    def requested_workers(self) -> int:
        """Workers the held clusters ask for now (the metric science_gateway_dask_workers_requested)."""
        total = 0
        for cluster in list(self.clusters.values()):
            try:
                total += len(cluster.worker_spec) * cluster._workers_per_job()
            except Exception:  # noqa: BLE001 - closing under us
                pass
        return total

    def get(self, cluster_id: str):
        if not _CLUSTER_ID.fullmatch(cluster_id):
            return None
        self._forget_closed()
        return self.clusters.get(cluster_id)

    def scale(self, cluster_id: str, workers: int):
        cluster = self.get(cluster_id)
        if cluster is None:
            return None
        cluster.scale(workers)  # beyond the limits: DaskLimitError with the limit
        self.metrics.dask_scale_requests.labels(cluster.preset_name).inc()
        return cluster

    async def close(self, cluster_id: str) -> bool:
        cluster = self.clusters.pop(cluster_id, None) if _CLUSTER_ID.fullmatch(cluster_id) else None
        if cluster is None:
            return False
        try:
            await cluster._close()
        finally:
            _forget_scratch(cluster)
            self._tidy_path()
        return True

    async def close_all(self) -> None:
        clusters, self.clusters = list(self.clusters.values()), {}
        await asyncio.gather(*(_close_quietly(c) for c in clusters))
        self._tidy_path()

    def _forget_closed(self) -> None:
        for cluster_id, cluster in list(self.clusters.items()):
            if cluster.status.name in ("closing", "closed", "failed"):
                del self.clusters[cluster_id]


async def _started(cluster):
    return await cluster  # an asynchronous cluster starts when awaited


async def _close_quietly(cluster) -> None:
    try:
        await cluster._close()
    except asyncio.CancelledError:
        raise
    except Exception:  # a cluster that failed to start may fail to close too: nothing left to free
        pass
    finally:
        _forget_scratch(cluster)


def _forget_scratch(cluster) -> None:
    """Take a closed cluster's scratch folders off ``sys.path``: distributed puts the folder of
    each scheduler and nanny it starts in this process first on ``sys.path`` and takes it off at
    close only while it is still first, so clusters closed in another order than they started
    (and nannies retired by a scale-down) would leave theirs behind in this long-lived process."""
    servers = [getattr(cluster, "scheduler", None), *getattr(cluster, "workers", {}).values()]
    for server in servers:
        folder = getattr(server, "local_directory", None)
        if folder and getattr(server, "_updated_sys_path", False) and folder in sys.path:
            sys.path.remove(folder)


def describe(cluster_id: str, cluster) -> dict:
    """A cluster as the panel (and ``GET /dask/clusters``) sees it."""
    try:
        connected = len(cluster.scheduler_info.get("workers", {}))
    except Exception:  # closing under us
        connected = 0
    per_job = cluster._workers_per_job()
    return {
        "id": cluster_id,
        "preset": cluster.preset_name,
        "status": cluster.status.name,
        "workers": connected,
        "requested": len(cluster.worker_spec) * per_job,
        "workers_per_job": per_job,
        "max_workers": cluster.limits["max_workers"],
        "dashboard_link": cluster.dashboard_link or "",
        "scheduler_address": cluster.scheduler_address,
    }


class ClustersHandlerBase(APIHandler):
    auth_resource = AUTH_RESOURCE

    def initialize(self, manager: ClusterManager):
        self.manager = manager

    async def prepare(self):
        await super().prepare()
        if len(self.request.uri) > MAX_URL_LENGTH:
            raise web.HTTPError(414, f"the URL is {len(self.request.uri)} characters long; at most {MAX_URL_LENGTH} are read")
        if len(self.request.body or b"") > MAX_BODY_BYTES:
            raise web.HTTPError(413, f"the request body is {len(self.request.body)} bytes; at most {MAX_BODY_BYTES} are read")

    def write_json(self, payload, status=200):
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(payload))

    def json_body(self, shape: str) -> dict:
        try:
            body = json.loads(self.request.body or b"{}")
        except (ValueError, RecursionError):
            raise web.HTTPError(400, f"the body is not JSON: {shape}") from None
        if not isinstance(body, dict):
            raise web.HTTPError(400, f"the body is JSON {type(body).__name__}, not an object: {shape}")
        return body

    def workers(self, body: dict, shape: str, *, required: bool) -> int:
        if "workers" not in body and not required:
            return 0
        workers = body.get("workers")
        if isinstance(workers, bool) or not isinstance(workers, int) or not 0 <= workers <= 100_000:
            raise web.HTTPError(400, f"'workers' is {quote_prefix(workers)}, not a whole number from 0: {shape}")
        return workers

    def no_cluster(self, cluster_id):
        raise web.HTTPError(
            404, f"no Dask cluster {quote_prefix(cluster_id)} in this server; GET dask/clusters lists yours"
        )


class ClustersHandler(ClustersHandlerBase):
    @web.authenticated
    @authorized
    async def get(self):
        self.manager._forget_closed()
        self.write_json({"clusters": [describe(i, c) for i, c in self.manager.clusters.items()]})

    @web.authenticated
    @authorized
    async def post(self):
        body = self.json_body(_CREATE_BODY)
        unknown = sorted(set(body) - {"preset", "workers"})
        if unknown:
            raise web.HTTPError(400, f"unknown key {quote_prefix(unknown[0])} in the body: {_CREATE_BODY}")
        preset = body.get("preset")
        if not isinstance(preset, str):
            raise web.HTTPError(400, f"'preset' is {quote_prefix(preset)}, not text: {_CREATE_BODY}")
        workers = self.workers(body, _CREATE_BODY, required=False)
        try:
            cluster_id, cluster = await self.manager.start(preset, workers)
        except (DaskPresetError, DaskLimitError) as e:
            raise web.HTTPError(403 if isinstance(e, DaskLimitError) else 404, str(e)) from None
        except asyncio.TimeoutError:
            raise web.HTTPError(
                504, f"the Dask scheduler did not start within {self.manager.start_timeout:g} s; try again"
            ) from None
        self.set_header("Location", f"{self.request.path.rstrip('/')}/{cluster_id}")
        self.write_json(describe(cluster_id, cluster), status=201)


class ClusterHandler(ClustersHandlerBase):
    @web.authenticated
    @authorized
    async def get(self, cluster_id):
        cluster = self.manager.get(cluster_id)
        if cluster is None:
            self.no_cluster(cluster_id)
        self.write_json(describe(cluster_id, cluster))

    @web.authenticated
    @authorized
    async def patch(self, cluster_id):
        body = self.json_body(_SCALE_BODY)
        unknown = sorted(set(body) - {"workers"})
        if unknown:
            raise web.HTTPError(400, f"unknown key {quote_prefix(unknown[0])} in the body: {_SCALE_BODY}")
        workers = self.workers(body, _SCALE_BODY, required=True)
        try:
            cluster = self.manager.scale(cluster_id, workers)
        except DaskLimitError as e:
            raise web.HTTPError(403, str(e)) from None
        if cluster is None:
            self.no_cluster(cluster_id)
        self.write_json(describe(cluster_id, cluster))

    @web.authenticated
    @authorized
    async def delete(self, cluster_id):
        if not await self.manager.close(cluster_id):
            self.no_cluster(cluster_id)
        self.set_status(204)
        self.finish()


#: (route under {base_url}/gateway/api, handler); openapi.yaml describes them
handlers = [
    ("/dask/clusters", ClustersHandler),
    # any id reaches the handler, so an unknown one gets the API's JSON 404, not the server's page
    (r"/dask/clusters/(?P<cluster_id>[^/]+)", ClusterHandler),
]


class DaskClustersExtension(ExtensionApp):
    """Holds the Dask clusters a user starts from JupyterLab's side panel, in their own server."""

    name = "science_gateway_dask"
    load_other_extensions = True

    max_clusters = Integer(
        4,
        help="""How many Dask clusters one user's server holds for the side panel at once (each is a
        scheduler process of its own); the user's worker limits apply across them as in a kernel.""",
    ).tag(config=True)

    start_timeout = Float(
        60.0, help="Seconds a new cluster's scheduler may take to start before the request fails."
    ).tag(config=True)

    def initialize_settings(self):
        settings = self.serverapp.web_app.settings
        self.manager = ClusterManager(
            max_clusters=self.max_clusters, start_timeout=self.start_timeout, metrics=server_metrics(settings)
        )
        register_busy_source(settings, "dask", self.manager.running)

    def initialize_handlers(self):
        deps = {"manager": self.manager}
        self.handlers.extend((f"/gateway/api{path}", handler, deps) for path, handler in handlers)

    async def stop_extension(self):
        await self.manager.close_all()


def _jupyter_server_extension_points():
    return [{"module": "science_gateway.dask.server", "app": DaskClustersExtension}]
