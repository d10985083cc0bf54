"""The Helm chart (helm/science-gateway) for tests: the real ``helm`` binary, rendering, values.

``helm`` comes from the Kubernetes service's facts (``KUBE_HELM`` in kubernetes.env, the binary
scripts/services/kubernetes takes out of a PyPI wheel). The chart depends on Zero to JupyterHub's
``jupyterhub`` chart, which cannot be downloaded here, and helm refuses a chart whose dependency is
missing from ``charts/`` even when its condition is off. :func:`staged_chart` therefore copies the
chart into a temporary directory and puts there, as ``charts/jupyterhub``, a chart with no
templates whose only content is Zero to JupyterHub's own values.schema.json (the copy in
tests/kubernetes/data). With ``jupyterhub.enabled=false`` it is dropped before anything renders;
with it on, helm checks our ``jupyterhub:`` values against that schema. Nothing of it is
committed to the chart: a real install runs ``helm dependency build`` against the chart repository.
"""

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import yaml

from .services import missing, service_env

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "science-gateway"
EXAMPLE_VALUES = REPO / "helm" / "examples" / "gateway-values.yaml"
#: the values the end-to-end Kubernetes tests render their hub's gateway.yaml from
E2E_VALUES = REPO / "tests" / "kubernetes" / "data" / "e2e-values.yaml"
Z2JH_SCHEMA = REPO / "tests" / "kubernetes" / "data" / "z2jh-4.3.5-values.schema.json"
HUB_CONFIG_SECRET = "science-gateway-hub-config"
#: what every render in the tests passes: the subchart off (it is not here)
DEPENDENCY_OFF = ("--set", "jupyterhub.enabled=false")


def helm_binary() -> str:
    helm = service_env("kubernetes").get("KUBE_HELM", "")
    if not helm or not os.access(helm, os.X_OK):
        missing("kubernetes", f"kubernetes.env names no executable KUBE_HELM ({helm!r})")
    return helm


def z2jh_overlay_schema() -> dict:
    """Zero to JupyterHub's values schema without its ``required`` lists.

    Our ``jupyterhub:`` values are an overlay: helm merges them over the subchart's own
    values.yaml, which supplies every required key (``proxy``, ``hub.baseUrl``, ...). Every other
    rule (types, enums, ``additionalProperties: false``) is kept.
    """

    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "required"}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return strip(json.loads(Z2JH_SCHEMA.read_text()))


def staged_chart(tmp_path: Path) -> Path:
    """A copy of the chart with the schema-only stand-in for the missing dependency (see above)."""
    chart = tmp_path / "science-gateway"
    shutil.copytree(CHART, chart)
    sub = chart / "charts" / "jupyterhub"
    sub.mkdir(parents=True)
    (sub / "Chart.yaml").write_text("apiVersion: v2\nname: jupyterhub\nversion: 4.3.5\n")
    (sub / "values.schema.json").write_text(json.dumps(z2jh_overlay_schema()))
    return chart


def helm(*args, env=None, check=True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [helm_binary(), *map(str, args)], capture_output=True, text=True, timeout=120,
        check=check, env={**os.environ, **(env or {})},
    )


def render(chart: Path, *args) -> list[dict]:
    """``helm template`` of the chart: the rendered manifests."""
    out = helm("template", "sg", chart, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def gateway_yaml(manifests: list[dict]) -> str:
    """The gateway.yaml text of the rendered hub-config Secret."""
    (secret,) = [m for m in manifests if m["kind"] == "Secret" and m["metadata"]["name"] == HUB_CONFIG_SECRET]
    return base64.b64decode(secret["data"]["gateway.yaml"]).decode()


def render_gateway_config(tmp_path: Path, *args) -> Path:
    """Render the chart's gateway.yaml (with ``args``: ``-f FILE``, ``--set K=V``) into a file,
    for a hub to load through ``SCIENCE_GATEWAY_CONFIG`` (the end-to-end tests spawn with it)."""
    path = tmp_path / "gateway.yaml"
    path.write_text(gateway_yaml(render(staged_chart(tmp_path / "chart"), *DEPENDENCY_OFF, *args)))
    return path
