"""The hub's gateway metrics after a real Slurm spawn: spawns by outcome, the queue wait from
sbatch to RUNNING, and the shared poller's squeue calls (``/hub/metrics``); the server's
``/gateway/api/session`` says when its job's walltime ends."""

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sgtest.hub import HubSession, RunningHub
from sgtest.slurm import USERS

pytestmark = [pytest.mark.slurm, pytest.mark.hub]


@pytest.fixture(scope="module")
def metrics_hub(slurm, tmp_path_factory):
    config = slurm.hub_config()
    config["JupyterHub"]["authenticate_prometheus"] = False  # a scrape without a token, for the test
    with RunningHub(tmp_path_factory.mktemp("slurm-metrics-hub"), config=config) as hub:
        yield hub


def scrape(session) -> dict:
    r = session.get("/hub/metrics")
    assert r.status_code == 200, r.text[:300]
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def value(found, name, **labels):
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_a_slurm_spawn_moves_the_hubs_metrics(metrics_hub):
    demo = HubSession(metrics_hub)
    assert demo.login("demo", USERS["demo"][0]).status_code == 200
    before = scrape(demo)
    refused = demo.api("/users/demo/server", method="POST", json={"partition": "cpu", "cores": 64})
    assert refused.status_code == 400, refused.text
    try:
        demo.start_server("demo", options={"partition": "cpu", "cores": 1, "memory_gb": 1, "walltime_hours": 2})
        after = scrape(demo)
        # the server knows when its job ends (GET /gateway/api/session, from squeue in the job)
        session = demo.get("/user/demo/gateway/api/session").json()
        assert session["scheduler"] == "slurm" and session["ends"] and session["job_id"], session
        assert 2 * 3600 - 300 <= session["seconds_left"] <= 2 * 3600 and session["warning"] == "", session
    finally:
        demo.ensure_stopped("demo")
    spawns = "science_gateway_spawns_total"
    for outcome, moved in (("success", 1), ("refused-options", 1), ("failure", 0)):
        assert value(after, spawns, backend="slurm", outcome=outcome) == \
            value(before, spawns, backend="slurm", outcome=outcome) + moved, outcome
    waits = "science_gateway_queue_wait_seconds"
    assert value(after, f"{waits}_count", backend="slurm") == value(before, f"{waits}_count", backend="slurm") + 1
    waited = value(after, f"{waits}_sum", backend="slurm") - value(before, f"{waits}_sum", backend="slurm")
    assert 0 < waited < 120
    calls = "science_gateway_poller_calls_total"
    assert value(after, calls, command="squeue") > value(before, calls, command="squeue")
    assert value(after, "science_gateway_poller_errors_total", command="squeue") == \
        value(before, "science_gateway_poller_errors_total", command="squeue")
