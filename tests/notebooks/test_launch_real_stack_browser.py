"""A launch link on the real stack, in headless Chromium: the server is a Slurm job, the catalogue
Rucio, the dataset on tape.

A logged-out astronomer opens ``/hub/launch?notebook=...&dataset=...&partition=...&...``: the
hub's login form, then the spawn (the link made every choice, so no form), the launch page with
the stage-in's progress while Rucio's daemons recall the files, then JupyterLab with the copied
notebook open and the dataset in its first cell; the files are on the mounted disk RSE. A link
that makes only some choices shows the spawn form with them selected; a hostile link is refused
with the reason. Screenshots ``launch-slurm-rucio-*``.
"""

import html
import pwd
import shutil
from pathlib import Path
from urllib.parse import urlencode

import pytest
from sgtest.real_stack import ACCOUNT, USER, dataset, hub, rucio, slurm, stop_session, transfers_in_thread  # noqa: F401
from sgtest.slurm import USERS

from sgtest import rucio_transfers as rt
from sgtest.browser import chromium_page, screenshot
from sgtest.hub import HubSession, wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.rucio, pytest.mark.hub, pytest.mark.browser]

NOTEBOOK = "01-astronomer-walkthrough.ipynb"
CHOICES = {"partition": "cpu", "cores": "1", "memory_gb": "2", "walltime_hours": "2", "account": ACCOUNT}


def test_a_partial_link_shows_the_form_with_its_choices_and_a_hostile_one_is_refused(hub, slurm):
    session = HubSession(hub)
    assert session.login(USER, USERS[USER][0]).status_code == 200
    session.ensure_stopped(USER)
    r = session.get(f"/hub/launch?{urlencode({'notebook': NOTEBOOK, 'partition': 'long'})}")
    assert r.status_code == 200
    assert "sg-launch-note" in r.text and "it chose partition long" in r.text
    assert '<option value="long" selected>' in r.text
    assert 'action="/hub/spawn/astro1?next=%2Fuser%2Fastro1%2Fgateway%2Flaunch%3Fnotebook%3D' in r.text
    # out of policy for the user's groups: refused before anything starts, with the policy's words
    r = session.get(f"/hub/launch?{urlencode({'notebook': NOTEBOOK, 'partition': 'cpu', 'cores': '64'})}")
    assert r.status_code == 400 and "cores on partition 'cpu' must be 1 to 2" in html.unescape(r.text)
    r = session.get(f"/hub/launch?{urlencode({'notebook': NOTEBOOK, 'account': 'someone-elses'})}")
    assert r.status_code == 400 and "account" in r.text
    assert session.server(USER) == {} and USER not in slurm.jobs()


def test_a_launch_link_in_chromium_logs_in_spawns_stages_and_opens_the_notebook(slurm, rucio, dataset, hub, artifacts_dir):
    admin = rt.client(rucio)
    scope, name = dataset.split(":", 1)
    files = sorted(f["name"] for f in admin.list_files(scope, name))
    home = Path(pwd.getpwnam(USER).pw_dir)
    shutil.rmtree(home / "launched", ignore_errors=True)
    shutil.rmtree(home / "examples", ignore_errors=True)  # this build's library is the one copied
    link = f"{hub.url}/hub/launch?{urlencode({'notebook': NOTEBOOK, 'dataset': dataset, **CHOICES})}"
    rounds = []
    seen = {}
    with chromium_page(viewport=(1280, 900), failure_screenshot=f"{artifacts_dir}/launch-slurm-rucio-FAILED.png") as page:
        page.goto(link)
        page.wait_for_selector("#username_input", timeout=30_000)
        screenshot(page, artifacts_dir, "launch-slurm-rucio-01-login")
        page.fill("#username_input", USER)
        page.fill("#password_input", USERS[USER][0])
        page.click("#login_submit")
        # the spawn (a Slurm job), then the launch page while the tape recall runs
        page.wait_for_url("**/user/astro1/gateway/launch**", timeout=120_000)
        page.wait_for_selector("#sg-progress", timeout=30_000)
        seen["waiting"] = page.locator("#sg-status").inner_text()
        screenshot(page, artifacts_dir, "launch-slurm-rucio-02-staging")
        job = slurm.jobs()[USER]
        slurm.session_job_ids.append(job["job_id"])
        with transfers_in_thread(rucio, admin, dataset, rounds):
            page.wait_for_url(f"**/user/{USER}/lab/tree/launched/{NOTEBOOK}", timeout=240_000)
        # JupyterLab may restore the user's earlier tabs beside it: the launched notebook's cell
        cell = page.locator(".jp-Cell .jp-InputArea", has_text="from the launch link").first
        cell.wait_for(state="visible", timeout=90_000)
        seen["first_cell"] = cell.inner_text()
        seen["tab"] = page.locator(".lm-TabBar-tab.jp-mod-current").first.inner_text()
        screenshot(page, artifacts_dir, "launch-slurm-rucio-03-notebook-open")

        # a hostile link, in the same browser: the reason on the hub's error page
        page.goto(f"{hub.url}/hub/launch?{urlencode({'notebook': '../../../etc/shadow.ipynb'})}")
        seen["hostile"] = page.locator("body").inner_text()
        screenshot(page, artifacts_dir, "launch-slurm-rucio-04-hostile-link")

    session = HubSession(hub)
    assert session.login(USER, USERS[USER][0]).status_code == 200
    requests_ = [r for r in session.get(f"/user/{USER}/gateway/api/requests").json()["requests"] if r["did"] == dataset]
    paths = session.get(f"/user/{USER}/gateway/api/requests/{requests_[0]['id']}/paths").json()["paths"]
    stop_session(session, hub, slurm)

    assert "of" in seen["waiting"] and "files" in seen["waiting"], seen["waiting"]
    assert rounds and rounds[0] >= 1
    assert f'dataset = "{dataset}"' in seen["first_cell"], seen["first_cell"]
    assert NOTEBOOK in seen["tab"], seen["tab"]
    assert job["account"] == ACCOUNT, job  # the link's account charged
    # the data is there: every file of the dataset on the mounted disk RSE
    assert [r["state"] for r in requests_] == ["ready"]
    assert sorted(p.rsplit("/", 1)[1] for p in paths) == files
    assert all(Path(p).is_file() for p in paths), paths
    # the copy is the user's own file, in their home
    copy = home / "launched" / NOTEBOOK
    assert copy.is_file() and copy.stat().st_uid == pwd.getpwnam(USER).pw_uid
    assert "This launch link is refused" in seen["hostile"] and "must be a relative path" in seen["hostile"]
    wait_for(lambda: USER not in slurm.jobs(), 60, what="the session job to end")
