"""The server's checks for work in flight: what counts, and that the catalogue is asked only while
a stage-in may be in flight (a stand-in catalogue and kernel manager: the real ones are in
test_culling.py)."""

import os

from science_gateway.core.activity import ACTIVITY_KEY, register_busy_source
from science_gateway.core.catalog import IN_PROGRESS, READY
from science_gateway.core.metrics import ServerMetrics
from science_gateway.jupyter_ext.activity import ActivityKeeper


class Request:
    def __init__(self, state):
        self.state = state


class Catalog:
    def __init__(self):
        self.states, self.calls = [], 0

    async def status(self):
        self.calls += 1
        return [Request(s) for s in self.states]


class Kernels:
    def __init__(self, states):
        self.kernels = {str(i): type("K", (), {"execution_state": s})() for i, s in enumerate(states)}

    def list_kernel_ids(self):
        return list(self.kernels)

    def get_kernel(self, kernel_id):
        return self.kernels[kernel_id]


async def test_what_keeps_the_server_active():
    catalog, metrics = Catalog(), ServerMetrics()
    settings = {"kernel_manager": Kernels(["idle", "idle"])}
    keeper = ActivityKeeper(settings, catalog, metrics, interval=1)
    assert await keeper.check() == [] and ACTIVITY_KEY not in settings
    assert catalog.calls == 1  # at start: requests of an earlier session may be in flight
    await keeper.check()
    assert catalog.calls == 1  # nothing in flight: not asked again

    settings["kernel_manager"] = Kernels(["idle", "busy"])
    dask = {"running": True}
    register_busy_source(settings, "dask", lambda: dask["running"])
    catalog.states = [IN_PROGRESS]
    keeper.staging_started()
    assert await keeper.check() == ["kernel", "dask", "staging"]
    assert ACTIVITY_KEY in settings
    assert metrics.registry.get_sample_value("science_gateway_server_busy", {"reason": "dask"}) == 1

    settings["kernel_manager"], dask["running"], catalog.states = Kernels(["idle"]), False, [READY]
    assert await keeper.check() == []
    calls = catalog.calls
    assert await keeper.check() == [] and catalog.calls == calls
    assert metrics.registry.get_sample_value("science_gateway_server_busy", {"reason": "staging"}) == 0


def test_a_kernels_cluster_counts_while_its_process_lives(tmp_path):
    import subprocess
    import sys

    from science_gateway.core.activity import live_kernel_clusters, remove_cluster_marker, write_cluster_marker

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(ended.stdout)
    mine = write_cluster_marker(str(tmp_path), os.getpid(), "a1", "small")
    gone = write_cluster_marker(str(tmp_path), dead_pid, "b2", "small")
    assert live_kernel_clusters(str(tmp_path)) == 1
    assert not os.path.exists(gone)  # a killed kernel's marker is cleared
    remove_cluster_marker(mine)
    assert live_kernel_clusters(str(tmp_path)) == 0
