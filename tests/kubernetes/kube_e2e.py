"""What the real-hub Kubernetes tests share: a small client of the real API server, a fresh
namespace per module, the test image, the test policy, and the hub config built from one
``gateway.yaml`` (:func:`kube_hub_config`), the file the chart renders into its Secret.

The client is sgtest.kube's :class:`~sgtest.kube.KubeCluster` (the control plane's own helpers)
with a few conveniences.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import requests
from sgtest.chart import E2E_VALUES, render_gateway_config
from sgtest.hub import HubSession, RunningHub, free_port, wait_for
from sgtest.kube import KubeCluster, token_of
from sgtest.services import missing, service_env

#: the gateway's single-user image (contract: chart default); the node agent maps it to a PATH
IMAGE = "ghcr.io/science-gateway/singleuser"
IMAGE_TAG = "0.1.0"

#: the policy and node pools are the chart's render of tests/kubernetes/data/e2e-values.yaml
#: hub users: name -> (password, groups)
USERS = {
    "demo": ("demo", ["astro"]),
    "admin": ("admin", ["astro", "gateway-admins"]),
    "student": ("student", ["students"]),
    "astro1": ("astro1", ["astro"]),
    "astro2": ("astro2", ["astro"]),
    "astro3": ("astro3", ["astro"]),
}


class KubeAPI(KubeCluster):
    """sgtest.kube's admin client of the control plane, plus what these tests ask of it."""

    @classmethod
    def from_services(cls, timeout: float = 180) -> KubeAPI:
        """The control plane of scripts/services/kubernetes (skip-or-fail when absent); waits for
        it to answer (its service may be restarting) and for its nodes to be Ready."""
        env = service_env("kubernetes")

        def ready():
            r = requests.get(env["KUBE_API_URL"] + "/readyz", verify=env["KUBE_CA_FILE"], timeout=5,
                             headers={"Authorization": f"Bearer {token_of(env['KUBECONFIG_ADMIN'])}"})
            if r.status_code != 200:
                return False
            nodes = cls(env).list("nodes")
            return {n["metadata"]["name"] for n in nodes if _ready(n)} >= set(env.get("KUBE_NODES", "").split())

        try:
            wait_for(ready, timeout, interval=1, what="the Kubernetes API server and its Ready nodes")
        except TimeoutError as e:
            missing("kubernetes", str(e))
        return cls(env)

    def pods(self, namespace, selector: str = "") -> list[dict]:
        return self.list("pods", namespace, **({"labelSelector": selector} if selector else {}))

    def user_pods(self, namespace, username) -> list[dict]:
        return self.pods(namespace, f"hub.jupyter.org/username={username}")

    def pvcs(self, namespace) -> list[dict]:
        return self.list("persistentvolumeclaims", namespace)

    def delete_pod(self, namespace, name, grace: int | None = None):
        self.delete("pods", name, namespace, grace=grace)


def _ready(node) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node.get("status", {}).get("conditions", []))


def venv_bin() -> str:
    """The bin dir of the test venv (it has the gateway installed): the test image's PATH."""
    return str(Path(os.environ.get("SG_TEST_VENV") or sys.prefix) / "bin")


def gateway_yaml_for(state: Path) -> Path:
    """The hub's gateway.yaml: the chart's own render of tests/kubernetes/data/e2e-values.yaml
    (sgtest.chart), so the e2e hub runs the configuration the chart ships: chart and code cannot
    drift."""
    out = Path(tempfile.mkdtemp(prefix="chart-render-", dir=state))  # a fresh one per hub start
    return render_gateway_config(out, "-f", E2E_VALUES)


#: what the hub image's jupyterhub_config.d file (images/hub/jupyterhub_config.d/science_gateway.py)
#: does, with the gateway.yaml named explicitly: the test hub's own SCIENCE_GATEWAY_CONFIG also
#: lists this file, which kubernetes_config() must not load again
KUBE_HUB_PY = """
from science_gateway.hub.config import kubernetes_config, merge_hub_config

c = get_config()  # noqa: F821
merge_hub_config(c, kubernetes_config({{"SCIENCE_GATEWAY_CONFIG": {gateway_yaml!r}}}))
"""


def kube_hub_config(gateway_yaml: Path, namespace: str, hub_port: int, env: dict, **spawner) -> tuple[dict, Path]:
    """The test-only hub settings (demo login, the namespace, image, hub address) and a Python
    config file that loads ``gateway_yaml`` through kubernetes_config(), as the chart's hub does.
    Returns (config for RunningHub, the .py file to append to SCIENCE_GATEWAY_CONFIG)."""
    from science_gateway.hub.passwords import hash_password

    config = {
        "JupyterHub": {"cleanup_servers": False, "hub_port": hub_port, "hub_connect_url": f"http://127.0.0.1:{hub_port}"},
        # nothing of the hub's local state travels into pods (the embedded default passes its state dir)
        "Spawner": {"http_timeout": 90, "poll_interval": 2, "environment": {}},
        "KubeSpawner": {
            "namespace": namespace,
            "image": f"{IMAGE}:{IMAGE_TAG}",
            "storage_class": env.get("KUBE_STORAGE_CLASS", "sg-local"),
            "storage_capacity": "1Gi",
            "start_timeout": 120,
            "k8s_api_request_timeout": 10,
        },
        # many test servers on two 4-core test nodes: requests are a quarter of the limits
        "KubernetesSpawner": {"guarantee_ratio": 0.25, **spawner},
        "DemoAuthenticator": {
            "users": {
                name: {"password": hash_password(password), "groups": groups, "admin": name == "admin"}
                for name, (password, groups) in USERS.items()
            }
        },
    }
    py = gateway_yaml.with_name("kube_hub_config.py")
    py.write_text(KUBE_HUB_PY.format(gateway_yaml=str(gateway_yaml)))
    return config, py


def make_kube_hub(state: Path, api: KubeAPI, namespace: str, hub_port: int | None = None, port: int | None = None,
                  **spawner) -> RunningHub:
    """A RunningHub on the Kubernetes spawner (not started): its own ports unless given (a restart
    reuses them), KUBECONFIG the hub's (user sg-hub)."""
    state.mkdir(parents=True, exist_ok=True)
    hub_port = hub_port or free_port()
    gateway_yaml = gateway_yaml_for(state)
    config, py = kube_hub_config(gateway_yaml, namespace, hub_port, api.env, **spawner)
    env = {
        "KUBECONFIG": api.env["KUBECONFIG_HUB"],
        "SCIENCE_GATEWAY_CONFIG": f"{state / 'test-site-config.yaml'}{os.pathsep}{py}",
    }
    hub = RunningHub(state, config=config, env=env)
    if port:
        hub.port, hub.url = port, f"http://127.0.0.1:{port}"
    return hub


def wait_pods_gone(api: KubeAPI, namespace: str, username: str, timeout: float = 60):
    wait_for(lambda: not api.user_pods(namespace, username), timeout, interval=0.5, what=f"{username}'s pod to go")


def login(hub: RunningHub, name: str) -> HubSession:
    """A session of hub user ``name`` (of :data:`USERS`), logged in through the form."""
    session = HubSession(hub)
    r = session.login(name, USERS[name][0])
    assert r.status_code == 200, r.text[:300]
    return session
