"""The Grafana dashboard and docs/operations.md name every gateway metric, and only those."""

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from science_gateway.core.metrics import HubMetrics, ServerMetrics

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "docs" / "grafana" / "science-gateway.json"


def metric_names() -> set[str]:
    """Every sample name our metrics export, from fresh registries (not the process's)."""
    names = set()
    hub, server = CollectorRegistry(), CollectorRegistry()
    HubMetrics(hub)
    ServerMetrics(server)
    for registry in (hub, server):
        for family in registry.collect():
            names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names


def base(name: str) -> str:
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def test_the_dashboard_shows_every_metric_and_no_other():
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {base(n) for panel in dashboard["panels"] for target in panel["targets"]
               for n in re.findall(r"science_gateway_\w+", target["expr"])}
    assert queried == metric_names()
    assert all(panel["datasource"]["uid"] == "${datasource}" for panel in dashboard["panels"])


def test_the_operations_doc_lists_every_metric():
    text = (REPO / "docs" / "operations.md").read_text()
    assert {n for n in metric_names() if f"`{n}`" not in text} == set()
