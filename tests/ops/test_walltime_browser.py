"""The walltime warning in JupyterLab (headless Chromium): a server whose batch job ends in ten
minutes shows a notification with the time left. The embedded default's local server is given
the environment a Slurm job has (``SLURM_JOB_ID``, ``SLURM_JOB_END_TIME``); the real Slurm's end
time is checked in tests/slurm/test_slurm_metrics.py."""

import os
import time

import pytest
from sgtest.browser import chromium_page, hub_login, screenshot
from sgtest.hub import RunningHub

pytestmark = [pytest.mark.browser, pytest.mark.hub]


@pytest.fixture(scope="module")
def batch_hub(tmp_path_factory):
    from science_gateway.hub.passwords import hash_password

    state = tmp_path_factory.mktemp("walltime-hub")
    environment = {"SCIENCE_GATEWAY_STATE_DIR": str(state), "SLURM_JOB_ID": "777",
                   "SLURM_JOB_END_TIME": str(int(time.time()) + 600)}
    config = {
        "DemoAuthenticator": {"users": {"demo": {"password": hash_password("demo"), "groups": ["astro"]}}},
        "Spawner": {"environment": environment},
    }
    if os.geteuid() == 0:
        config["Spawner"]["args"] = ["--ServerApp.allow_root=True"]
    with RunningHub(state, config=config) as hub:
        yield hub


def test_the_walltime_warning_shows_the_time_left(batch_hub, artifacts_dir):
    with chromium_page(failure_screenshot=os.path.join(artifacts_dir, "walltime-failure.png")) as page:
        hub_login(page, batch_hub.url, "demo", "demo")
        page.wait_for_url("**/user/demo/lab**", timeout=90_000)
        page.wait_for_selector("#jp-main-dock-panel", timeout=90_000)
        page.wait_for_selector(".jp-Launcher", timeout=60_000)
        # a toast (JupyterLab's notifications), not only an entry in the notification list
        toast = page.locator(".Toastify__toast", has_text="Your server's batch job ends in").first
        toast.wait_for(state="visible", timeout=60_000)
        page.wait_for_timeout(1_000)  # the toast's slide-in, for the screenshot
        text = toast.inner_text()
        assert any(f"ends in {m} minutes" in text for m in (9, 10)), text
        assert "save your work" in text
        screenshot(page, artifacts_dir, "walltime-warning")
