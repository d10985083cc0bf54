"""Fixtures of the Kubernetes end-to-end tests: the control plane, a fresh namespace per module, and
a real JupyterHub on the gateway's Kubernetes spawner in it (kube_e2e.py has the pieces)."""

import pytest
from kube_e2e import IMAGE, KubeAPI, make_kube_hub, venv_bin


@pytest.fixture(scope="module")
def kube():
    api = KubeAPI.from_services()
    api.register_image(IMAGE, venv_bin())
    return api


@pytest.fixture(scope="module")
def namespace(kube):
    with kube.namespace() as name:
        yield name


@pytest.fixture(scope="module")
def kube_hub(kube, namespace, tmp_path_factory):
    with make_kube_hub(tmp_path_factory.mktemp("kubehub"), kube, namespace) as hub:
        yield hub
