"""The side panel on the real stack, in headless Chromium: the astronomer's server is a Slurm job,
its catalogue Rucio, the panel's Dask workers Slurm jobs of the user.

Without writing code: the panel's search finds the fresh tape dataset by scope and metadata, Stage
makes a Rucio rule, Requests shows the recall reach ready (this test runs Rucio's transfer daemons
meanwhile) with paths on the mounted disk RSE, Insert paths puts the Python API into the notebook
and the cell gives those paths, Clusters starts 2 workers (seen in ``squeue`` as the user's jobs),
the dashboard opens in a JupyterLab tab, Close ends the worker jobs. Screenshots
``panel-slurm-rucio-*``.
"""

import asyncio
import concurrent.futures
import pwd
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sgtest.real_stack import USER, dataset, hub, rucio, slurm, squeue, start_session, stop_session, transfers_in_thread  # noqa: F401
from sgtest.slurm import USERS

from sgtest import rucio_transfers as rt
from sgtest.browser import chromium_page, hub_login, panel_tab, run_panel, screenshot
from sgtest.hub import wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.rucio, pytest.mark.hub, pytest.mark.browser]


def stage_and_fail(page, rucio, did: str, artifacts_dir: str) -> dict:
    """Stage ``did`` from the panel, run Rucio's daemons until its copy fails; what Requests shows."""
    scope, name = did.split(":", 1)
    data = panel_tab(page, "Data")
    data.locator(".sg-pattern").fill(f"{scope}:{name}")
    data.locator(".sg-filters").fill("")
    data.locator(".sg-pattern").press("Enter")
    row = data.locator(f".sg-dataset[data-did='{did}']")
    row.get_by_role("button", name="Stage").click()
    row.locator(".sg-row-note", has_text="see Requests").wait_for(timeout=30_000)
    # the copy of the missing file fails for good (in a thread: Playwright's loop runs in this one)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, rt.transfer_round(rucio, cycles=5)).result(timeout=300)
    request = panel_tab(page, "Requests").locator(f".sg-request[data-did='{did}']")
    request.locator(".sg-words", has_text="stuck").wait_for(timeout=60_000)
    request.locator(".sg-failed summary").click()
    seen = {"words": request.locator(".sg-words").inner_text(),
            "failed": request.locator(".sg-failed li").all_inner_texts(),
            "buttons": request.locator(".sg-actions button").all_inner_texts()}
    screenshot(page, artifacts_dir, "panel-slurm-rucio-07-panel-request-stuck")
    return seen


def test_panel_in_chromium_on_slurm_and_rucio(slurm, rucio, dataset, hub, artifacts_dir):
    admin = rt.client(rucio)
    scope, name = dataset.split(":", 1)
    files = sorted(f["name"] for f in admin.list_files(scope, name))
    home = Path(pwd.getpwnam(USER).pw_dir)
    before = set(home.glob("Untitled*.ipynb"))
    session, workers_name = start_session(hub, slurm)
    rounds, workers = [], []

    def transfers():
        return transfers_in_thread(rucio, admin, dataset, rounds)

    def cluster_up():
        workers.extend(squeue(workers_name))

    failed = f"{artifacts_dir}/panel-slurm-rucio-FAILED.png"
    try:
        with chromium_page(viewport=(1400, 1000), failure_screenshot=failed) as page:
            hub_login(page, hub.url, USER, USERS[USER][0])
            page.wait_for_url(f"**/user/{USER}/lab**", timeout=90_000)
            seen = run_panel(page, hub.url, USER, dataset, artifacts_dir, "panel-slurm-rucio",
                             pattern=f"{scope}:*", filters="project=run2024, datatype=RAW",
                             while_staging=transfers, on_cluster=cluster_up, timeout_ms=240_000)
            # a dataset with a file missing on tape: the request is stuck, with Rucio's reason
            bad = rt.make_dataset(admin, rucio, n_files=2, missing_files=(1,), scope=scope, prefix="run2024.bad",
                                  meta={"project": "run2024", "datatype": "RAW"})
            stuck = stage_and_fail(page, rucio, bad, artifacts_dir)
    finally:
        for notebook in set(home.glob("Untitled*.ipynb")) - before:
            notebook.unlink(missing_ok=True)
        for rule in admin.list_replication_rules({"account": rucio["RUCIO_ACCOUNT"], "rse_expression": rucio["RUCIO_DISK_RSE"]}):
            if rule["scope"] == scope and rule["name"].startswith("run2024.bad"):
                admin.update_replication_rule(rule["id"], {"lifetime": 0})

    # found on tape, recalled by Rucio's daemons, ready on the mounted disk RSE
    assert "on tape" in seen["row"] and f"{len(files)} files" in seen["row"], seen["row"]
    assert rounds and rounds[0] >= 1
    assert "ready" in seen["request"], seen["request"]
    assert sorted(p.rsplit("/", 1)[1] for p in seen["paths"]) == files
    assert all(p.startswith(rucio["RUCIO_MOUNT_PATH"]) for p in seen["paths"]), seen["paths"]
    # the inserted cell asked the kernel's Python API and got the same paths
    assert f'catalog.stage("{dataset}")' in seen["cell_source"]
    assert all(p in seen["cell_output"] for p in seen["paths"]), seen["cell_output"]
    # the panel's workers: Slurm jobs of this user, named after the session, charged to its account
    assert workers and all(w["state"] == "RUNNING" and w["user"] == USER for w in workers), workers
    assert "2 of 2 workers connected" in seen["cluster"]
    dashboard = urlsplit(seen["dashboard_src"])
    assert dashboard.path.startswith(f"/user/{USER}/proxy/") and dashboard.path.endswith("/status"), dashboard
    assert seen["dashboard_status"] == 200
    # the failed file and its reason, as Rucio gave it
    assert stuck["words"].startswith("stuck:") and "No such file" in stuck["words"], stuck
    assert len(stuck["failed"]) == 1 and stuck["failed"][0].startswith(f"{bad}.part001.csv: "), stuck
    assert "No such file" in stuck["failed"][0] and stuck["buttons"] == [], stuck  # failed: nothing to cancel
    wait_for(lambda: not squeue(workers_name), 60, what="the panel's Dask worker jobs to end after Close")
    stop_session(session, hub, slurm)
