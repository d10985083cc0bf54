"""The idle culler on a real hub with real servers and short timeouts: an idle server is stopped;
one with a kernel busy in a long cell, one holding a live Dask cluster (the side panel's), one whose
idle kernel holds a live Dask cluster and one with a stage-in in flight are not, until that work
ends (``science_gateway.hub.culling``,
``science_gateway.jupyter_ext.activity``)."""

import asyncio
import os
import time

import pytest
import requests
from sgtest.hub import HubSession, RunningHub, async_wait_for
from sgtest.kernel import RemoteKernel
from sgtest.notebooks import api_token

pytestmark = pytest.mark.hub

#: the culler's timeout and check interval (s); the servers check for work every second and
#: report to the hub every 2 s
TIMEOUT, EVERY = 20, 2
USERS = ("idle", "busykernel", "busydask", "kerneldask", "busystage")
TAPE_DATASET = "demo:run2024.raw.0002"  # on tape in the demo catalogue: its recall takes 900 s here


@pytest.fixture(scope="module")
def culling_hub(tmp_path_factory):
    from science_gateway.hub.passwords import hash_password

    state = tmp_path_factory.mktemp("culling-hub")
    users = {name: {"password": hash_password(name), "groups": ["astro"], "admin": False} for name in USERS}
    allow_root = ["--ServerApp.allow_root=True"] if os.geteuid() == 0 else []
    config = {
        "DemoAuthenticator": {"users": users},
        "IdleCulling": {"timeout": TIMEOUT, "every": EVERY},
        # Spawner.args replaces LocalSpawner's default (which allows root), so say it again here
        "Spawner": {
            "args": [*allow_root, "--GatewayExtension.activity_interval=1", "--DemoCatalog.tape_recall_seconds=900"],
            "environment": {"SCIENCE_GATEWAY_STATE_DIR": str(state), "JUPYTERHUB_ACTIVITY_INTERVAL": "2"},
        },
    }
    with RunningHub(state, config=config) as hub:
        yield hub


class User:
    def __init__(self, hub, name):
        self.hub, self.name = hub, name
        self.session = HubSession(hub)
        assert self.session.login(name, name).status_code == 200
        self.session.start_server(name)
        self.token = api_token(self.session, name, note="culling test")

    def call(self, method, path, **kwargs):
        return requests.request(method, f"{self.hub.url}/user/{self.name}{path}", timeout=120,
                                headers={"Authorization": f"token {self.token}"}, **kwargs)

    def running(self) -> bool:
        """Whether the hub has a server for the user (asked of the hub, not of the server: a
        request through the proxy to the server would be activity)."""
        return bool(self.session.server(self.name))


async def test_only_idle_servers_are_culled(culling_hub):
    # each server's work starts right after its server (a server left alone longer than the
    # timeout would be culled before its work began)
    users = {"idle": User(culling_hub, "idle"), "busykernel": User(culling_hub, "busykernel")}

    # a kernel busy in a long cell that prints nothing (the websocket is closed after 3 s)
    kernel = RemoteKernel(None, "busykernel", hub_url=culling_hub.url, token=users["busykernel"].token)
    kernel.start()
    with pytest.raises(TimeoutError):
        await kernel.execute("import time; time.sleep(900)", timeout=3)
    # a Dask cluster the server holds (the side panel's), without workers or work
    users["busydask"] = User(culling_hub, "busydask")
    r = users["busydask"].call("POST", "/gateway/api/dask/clusters", json={"preset": "small"})
    assert r.status_code == 201, r.text
    cluster_id = r.json()["id"]
    # a Dask cluster a notebook made, its kernel idle afterwards
    users["kerneldask"] = User(culling_hub, "kerneldask")
    notebook = RemoteKernel(None, "kerneldask", hub_url=culling_hub.url, token=users["kerneldask"].token)
    notebook.start()
    out = await notebook.execute("from science_gateway import dask as sgd\ncluster = sgd.cluster('small')\nprint(cluster.status.name)")
    assert out.strip() == "running", out
    # a stage-in from tape, in flight for 900 s
    users["busystage"] = User(culling_hub, "busystage")
    r = users["busystage"].call("POST", "/gateway/api/requests", json={"did": TAPE_DATASET})
    assert r.status_code == 201 and r.json()["state"] == "in_progress", r.text
    request_id = r.json()["id"]
    busy_since = time.monotonic()

    await async_wait_for(lambda: not users["idle"].running(), 3 * TIMEOUT, interval=1, what="the idle server culled")
    # twice the timeout with nothing through the proxy: the busy ones are still there
    await asyncio.sleep(max(0.0, 2 * TIMEOUT + 2 * EVERY - (time.monotonic() - busy_since)))
    assert {name: users[name].running() for name in USERS[1:]} == dict.fromkeys(USERS[1:], True), culling_hub.log_tail()
    assert "idle-culler" in culling_hub.log_text()

    # the work ends: each is culled in turn
    assert users["busykernel"].call("POST", f"/api/kernels/{kernel.kernel_id}/interrupt").status_code == 204
    assert users["busydask"].call("DELETE", f"/gateway/api/dask/clusters/{cluster_id}").status_code == 204
    assert users["busystage"].call("DELETE", f"/gateway/api/requests/{request_id}").status_code == 204
    await notebook.execute("cluster.close()")
    for name in USERS[1:]:
        await async_wait_for(lambda: not users[name].running(), 4 * TIMEOUT, interval=1, what=f"{name}'s server culled")
