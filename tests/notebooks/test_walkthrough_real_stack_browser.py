"""A person runs the astronomer's walkthrough in JupyterLab on the real stack, in headless Chromium.

The stack is ``real_stack``'s: the hub starts the astronomer's server as a Slurm job, its catalogue
is Rucio, Dask workers are Slurm jobs. In the browser (``sgtest.browser.run_walkthrough``): the
dataset browser finds the fresh tape dataset, Stage makes a Rucio rule, the monitor shows the
recall from tape reach ready with the local paths on the mounted disk RSE while this test runs
Rucio's transfer daemons, the launcher's workers connect (checked in ``squeue``), the dashboard
opens through the hub, the plot appears. Screenshots ``walkthrough-slurm-rucio-*``.
"""

import pytest
from sgtest.real_stack import USER, dataset, hub, rucio, slurm, squeue, start_session, stop_session, transfers_in_thread  # noqa: F401
from sgtest.slurm import USERS

from sgtest import rucio_transfers as rt
from sgtest.browser import chromium_page, hub_login, run_walkthrough
from sgtest.hub import wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.rucio, pytest.mark.hub, pytest.mark.browser]


def test_walkthrough_in_chromium_on_slurm_and_rucio(slurm, rucio, dataset, hub, artifacts_dir):
    admin = rt.client(rucio)
    scope, name = dataset.split(":", 1)
    files = sorted(f["name"] for f in admin.list_files(scope, name))
    session, workers_name = start_session(hub, slurm)
    rounds, workers = [], []

    def transfers():
        return transfers_in_thread(rucio, admin, dataset, rounds)

    def cluster_up():
        workers.extend(squeue(workers_name))

    failed = f"{artifacts_dir}/walkthrough-slurm-rucio-FAILED.png"
    with chromium_page(viewport=(1400, 1000), failure_screenshot=failed) as page:
        hub_login(page, hub.url, USER, USERS[USER][0])
        page.wait_for_url(f"**/user/{USER}/lab**", timeout=90_000)
        seen = run_walkthrough(page, hub.url, USER, dataset, artifacts_dir, "walkthrough-slurm-rucio",
                               while_staging=transfers, on_cluster=cluster_up, timeout_ms=240_000)

    # found on tape, recalled by Rucio's daemons, ready on the mounted disk RSE
    assert "tape" in seen["row"], seen["row"]
    assert rounds and rounds[0] >= 1
    assert "ready" in seen["request"], seen["request"]
    assert sorted(p.rsplit("/", 1)[1] for p in seen["paths"]) == files
    assert all(p.startswith(rucio["RUCIO_MOUNT_PATH"]) for p in seen["paths"]), seen["paths"]
    # the launcher's workers were Slurm jobs of this user, named after the session
    assert len(workers) == 2 and all(w["state"] == "RUNNING" and w["user"] == USER for w in workers), workers
    href = seen["dashboard_href"]
    assert href.startswith(f"/user/{USER}/proxy/") and href.endswith("/status"), href
    assert seen["dashboard_status"] == 200 and "Dask" in seen["dashboard_title"], seen
    wait_for(lambda: not squeue(workers_name), 60, what="the Dask worker jobs to end after close_cluster()")
    stop_session(session, hub, slurm)
