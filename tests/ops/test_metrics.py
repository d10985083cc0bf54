"""The gateway's Prometheus metrics, scraped from a real hub and a real user server: the hub's at
``/hub/metrics`` (beside JupyterHub's own) and the server's at ``/user/NAME/gateway/api/metrics``,
before and after a spawn, a refused spawn, a stage-in and a Dask scale-up from the side panel's API."""

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sgtest.hub import HubSession
from sgtest.notebooks import api_token

pytestmark = pytest.mark.hub


def samples(text: str) -> dict:
    """(sample name, sorted labels) -> value, of a Prometheus text scrape."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def value(scrape: dict, name: str, **labels) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def admin_session(embedded_hub):
    session = HubSession(embedded_hub)
    assert session.login("admin", "admin").status_code == 200
    return session


def hub_scrape(admin_session) -> dict:
    r = admin_session.get("/hub/metrics")
    assert r.status_code == 200, r.text[:300]
    return samples(r.text)


class Server:
    """demo's server's gateway API with an API token of demo's."""

    def __init__(self, hub, token):
        self.base = f"{hub.url}/user/demo/gateway/api"
        self.headers = {"Authorization": f"token {token}"}

    def call(self, method, path, **kwargs):
        return requests.request(method, self.base + path, headers=self.headers, timeout=120, **kwargs)

    def scrape(self) -> dict:
        r = self.call("GET", "/metrics")
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain"), r.text[:300]
        return samples(r.text)


def test_hub_and_server_metrics_move_by_what_happened(embedded_hub, demo_session, admin_session):
    spawns = "science_gateway_spawns_total"
    demo_session.start_server("demo")  # the login started one already: let it come up, then stop it
    demo_session.stop_server("demo")
    before = hub_scrape(admin_session)
    assert "jupyterhub_running_servers" in {name for name, _ in before}  # JupyterHub's own are still there

    # a refused spawn (the local spawner takes no options), then a real one
    r = demo_session.api("/users/demo/server", method="POST", json={"partition": "gpu"})
    assert r.status_code == 400, r.text
    demo_session.start_server("demo")
    after = hub_scrape(admin_session)
    assert value(after, spawns, backend="local", outcome="refused-options") == \
        value(before, spawns, backend="local", outcome="refused-options") + 1
    assert value(after, spawns, backend="local", outcome="success") == \
        value(before, spawns, backend="local", outcome="success") + 1
    assert value(after, spawns, backend="local", outcome="failure") == value(before, spawns, backend="local", outcome="failure")
    # the families exist from the first use on, with their help
    text = admin_session.get("/hub/metrics").text
    for name in ("science_gateway_spawns_total", "science_gateway_queue_wait_seconds",
                 "science_gateway_poller_calls_total", "science_gateway_token_refresh_failures_total"):
        assert f"# HELP {name.removesuffix('_total')}" in text or f"# HELP {name}" in text, name

    server = Server(embedded_hub, api_token(demo_session, "demo", note="metrics test"))
    # without credentials: refused like the rest of the API
    assert requests.get(server.base + "/metrics", timeout=30).status_code == 403
    start = server.scrape()
    backend = {"backend": "DemoCatalog"}

    # a stage-in of a dataset on disk (9608 bytes), the same again (reused), a refused DID
    created = server.call("POST", "/requests", json={"did": "demo:run2024.raw.0001"})
    assert created.status_code == 201, created.text
    assert server.call("POST", "/requests", json={"did": "demo:run2024.raw.0001"}).status_code == 200
    assert server.call("POST", "/requests", json={"did": "no scope here"}).status_code == 400
    staged = server.scrape()
    for outcome, moved in (("created", 1), ("reused", 1), ("refused", 1), ("not_found", 0)):
        name = "science_gateway_staging_requests_total"
        assert value(staged, name, outcome=outcome, **backend) == value(start, name, outcome=outcome, **backend) + moved, outcome
    assert value(staged, "science_gateway_staged_bytes_total", **backend) == \
        value(start, "science_gateway_staged_bytes_total", **backend) + 9608
    latency = "science_gateway_catalog_call_seconds_count"
    assert value(staged, latency, call="stage", **backend) == value(start, latency, call="stage", **backend) + 3
    assert value(staged, "science_gateway_catalog_errors_total", call="stage", status="400", **backend) == \
        value(start, "science_gateway_catalog_errors_total", call="stage", status="400", **backend) + 1

    # a Dask cluster from the side panel's API, scaled up from 1 to 3 workers
    r = server.call("POST", "/dask/clusters", json={"preset": "small", "workers": 1})
    assert r.status_code == 201, r.text
    cluster_id = r.json()["id"]
    try:
        assert server.call("PATCH", f"/dask/clusters/{cluster_id}", json={"workers": 3}).status_code == 200
        scaled = server.scrape()
        assert value(scaled, "science_gateway_dask_clusters_started_total", preset="small") == \
            value(start, "science_gateway_dask_clusters_started_total", preset="small") + 1
        assert value(scaled, "science_gateway_dask_scale_requests_total", preset="small") == \
            value(start, "science_gateway_dask_scale_requests_total", preset="small") + 2
        assert value(scaled, "science_gateway_dask_workers_requested") == 3
    finally:
        assert server.call("DELETE", f"/dask/clusters/{cluster_id}").status_code == 204
    assert value(server.scrape(), "science_gateway_dask_workers_requested") == 0
    demo_session.stop_server("demo")
