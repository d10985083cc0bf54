"""A user's server SIGKILLed while a stage-in request is in progress (issue 18).

A real JupyterHub (the embedded default: the local process spawner) whose users' servers use the
Rucio backend on the REAL shared Rucio. A stage-in request lives in Rucio (a replication rule of
the user's account), not in the server or a kernel: after the server is killed and started again,
the request is still there, under the same id, its status continues from where Rucio is (the
copies went on meanwhile), staging the same dataset again finds it, and it ends ready with its
paths, seen through the Python API as a notebook sees it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from science_gateway.catalog import Catalog, CatalogAPIError
from sgtest import rucio_transfers as rt
from sgtest.hub import HubSession, RunningHub, wait_for
from sgtest.rucio_transfers import rucio  # noqa: F401 (the fixture)

pytestmark = [pytest.mark.rucio, pytest.mark.hub]

USER, PASSWORD = "admin", "admin"  # the embedded default's login


@pytest.fixture(scope="module")
def hub(rucio, tmp_path_factory):
    state = tmp_path_factory.mktemp("hub-server-killed")
    args, environment = rt.server_settings(rucio)
    # Spawner.args replaces LocalSpawner's default (which allows root), so say it again here
    allow_root = ["--ServerApp.allow_root=True"] if os.geteuid() == 0 else []
    tmp = state / "server-tmp"  # the server's own rucio-clients token cache
    tmp.mkdir()
    # poll_interval: the hub notices the killed server within a second, not JupyterHub's 30 s
    config = {"Spawner": {"args": [*allow_root, *args], "environment": {**environment, "TMPDIR": str(tmp)},
                          "poll_interval": 1}}
    with RunningHub(state, config=config) as running:
        yield running


def gone(pid: int) -> bool:
    """The process has exited (a zombie not yet reaped by the hub counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_request_outlives_its_server_killed_mid_stage(hub, rucio):
    started = time.monotonic()
    admin = rt.client(rucio)
    session = HubSession(hub)
    assert session.login(USER, PASSWORD).status_code == 200
    session.start_server(USER, timeout=180)  # a loaded machine starts servers slowly
    made = session.api(f"/users/{USER}/tokens", method="POST", json={"note": "kill test", "expires_in": 900})
    assert made.status_code in (200, 201), made.text
    api = Catalog(url=f"{hub.url}/user/{USER}/", token=made.json()["token"])

    pid = session.server(USER)["state"]["pid"]
    did, request = rt.staged_in_progress(admin, rucio, api)
    os.kill(pid, signal.SIGKILL)  # while the request is in progress
    killed = time.monotonic()
    assert request.files_total == 4
    wait_for(lambda: gone(pid), 10, what="the killed server to exit")
    with pytest.raises(CatalogAPIError):  # no server: nothing answers for the request now
        api.requests()
    asyncio.run(rt.transfer_round(rucio, bulk=1))  # the copies go on while no server runs: one file

    wait_for(lambda: not session.server(USER), 30, what="the hub to see the server gone")
    session.start_server(USER, timeout=180)  # a loaded machine starts servers slowly
    restarted = time.monotonic()
    assert session.server(USER)["state"]["pid"] != pid
    after = api.status(request)
    assert after.id == request.id and after.did == did
    assert after.files_done >= request.files_done and after.state in ("in_progress", "ready"), after
    assert request.id in {r.id for r in api.requests()}
    again = api.stage(did)
    assert again.id == request.id and again.reused

    asyncio.run(rt.transfer_round(rucio))  # the rest of the files
    done = api.wait(request, timeout=60, interval=0.5)
    assert done.state == "ready" and len(done.paths) == 4
    assert all(os.path.isfile(p) for p in api.paths(request))
    api.cancel(request)
    assert request.id not in {r.id for r in api.requests()}
    stopping = time.monotonic()
    session.stop_server(USER)
    print(f"server killed with the request at {request.files_done} of 4 files, seen again at {after.files_done}; "
          f"phases: to the kill {killed - started:.1f}s, restart {restarted - killed:.1f}s, "
          f"to ready {stopping - restarted:.1f}s, stop {time.monotonic() - stopping:.1f}s")
