"""The gateway's Prometheus metrics: the hub's (beside JupyterHub's own at ``/hub/metrics``) and
each user server's (``{base_url}/gateway/api/metrics``).

Nothing is registered at import. The hub's metrics live in prometheus_client's default registry,
which JupyterHub's ``/hub/metrics`` serves (``jupyterhub/metrics.py`` defines its own there): they
are made once per process, on first use, by :func:`hub_metrics` (the spawners, the authenticator
and the queue poller call it, all loaded through our entry points). A user server's metrics are a
:class:`ServerMetrics` on a registry of its own (:func:`server_metrics`), shared by the gateway's
server extensions through the web application's settings, and served by the gateway's handler:
so a user's scrape shows the gateway's counters, not the whole server's.

The names, labels and what each counts are listed in docs/operations.md.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

#: seconds: a batch queue wait is seconds to hours
QUEUE_WAIT_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, float("inf"))
#: seconds: a catalogue call is milliseconds to a timeout
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, float("inf"))

#: spawn outcomes
SUCCESS, FAILURE, REFUSED_OPTIONS = "success", "failure", "refused-options"


class HubMetrics:
    """The hub process's gateway metrics (in ``registry``; the default one via :func:`hub_metrics`)."""

    def __init__(self, registry: CollectorRegistry):
        self.spawns = Counter(
            "science_gateway_spawns",
            "Server spawns by the gateway's spawners, by backend (local, slurm, condor, kubernetes) and outcome "
            "(success: the spawner's start returned; failure: it raised; refused-options: the request "
            "was refused before anything started, e.g. outside the group policy)",
            ["backend", "outcome"],
            registry=registry,
        )
        self.queue_wait = Histogram(
            "science_gateway_queue_wait_seconds",
            "Seconds from a server's job submission until the scheduler runs it (Slurm: sbatch to RUNNING; "
            "Kubernetes: pod creation to a running pod)",
            ["backend"],
            buckets=QUEUE_WAIT_BUCKETS,
            registry=registry,
        )
        self.poller_calls = Counter(
            "science_gateway_poller_calls",
            "Scheduler queries made by the shared queue poller (one per interval for all users), by command",
            ["command"],
            registry=registry,
        )
        self.poller_errors = Counter(
            "science_gateway_poller_errors",
            "Scheduler queries of the shared queue poller that failed or timed out, by command",
            ["command"],
            registry=registry,
        )
        self.token_refresh_failures = Counter(
            "science_gateway_token_refresh_failures",
            "OIDC token refreshes that did not give new tokens, by reason (refused: the provider answered "
            "with an error; unreachable: it did not answer)",
            ["reason"],
            registry=registry,
        )


_hub_metrics: HubMetrics | None = None


def hub_metrics() -> HubMetrics:
    """The hub's metrics in the default registry, made on the first call of the process."""
    global _hub_metrics
    if _hub_metrics is None:
        _hub_metrics = HubMetrics(REGISTRY)
    return _hub_metrics


class ServerMetrics:
    """A user server's gateway metrics, in a registry of their own (:attr:`registry`)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry = registry if registry is not None else CollectorRegistry()
        self.staging_requests = Counter(
            "science_gateway_staging_requests",
            "Stage-in requests made through this server, by catalogue backend and outcome (created, reused: "
            "the dataset had a request already, not_found, refused: a 4xx from the catalogue, error: 5xx)",
            ["backend", "outcome"],
            registry=registry,
        )
        self.bytes_staged = Counter(
            "science_gateway_staged_bytes",
            "Bytes of the datasets of new stage-in requests, by catalogue backend",
            ["backend"],
            registry=registry,
        )
        self.catalog_latency = Histogram(
            "science_gateway_catalog_call_seconds",
            "Seconds each catalogue call of the REST API took, by backend and call",
            ["backend", "call"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.catalog_errors = Counter(
            "science_gateway_catalog_errors",
            "Catalogue calls that answered an error, by backend, call and HTTP status",
            ["backend", "call", "status"],
            registry=registry,
        )
        self.dask_clusters_started = Counter(
            "science_gateway_dask_clusters_started",
            "Dask clusters this server started for the side panel, by preset",
            ["preset"],
            registry=registry,
        )
        self.dask_scale_requests = Counter(
            "science_gateway_dask_scale_requests",
            "Scale requests to the Dask clusters this server holds (accepted ones), by preset",
            ["preset"],
            registry=registry,
        )
        self.dask_workers_requested = Gauge(
            "science_gateway_dask_workers_requested",
            "Workers requested now by the Dask clusters this server holds",
            registry=registry,
        )
        self.busy = Gauge(
            "science_gateway_server_busy",
            "1 while this server counts as active for the idle culler (a busy kernel, a Dask cluster, "
            "staging in flight), by reason",
            ["reason"],
            registry=registry,
        )


#: where a server's :class:`ServerMetrics` is kept, in its web application's settings
SETTINGS_KEY = "science_gateway_metrics"


def server_metrics(settings: dict) -> ServerMetrics:
    """The one :class:`ServerMetrics` of the server whose web application ``settings`` these are
    (made by whichever gateway extension asks first)."""
    metrics = settings.get(SETTINGS_KEY)
    if metrics is None:
        metrics = settings[SETTINGS_KEY] = ServerMetrics()
    return metrics
