"""A restricted-group user in headless Chromium: the policy's form, the queue's reason, JupyterLab.

The `students` group may use only the `debug` partition (1 core on the test cluster). A blocker
job fills it, so the student's server pends with Slurm's reason until the blocker is cancelled.
"""

import subprocess

import pytest
from sgtest.slurm import USERS, SlurmFixture
from sgtest.browser import chromium_page, hub_login, screenshot
from sgtest.hub import RunningHub

pytestmark = [pytest.mark.slurm, pytest.mark.hub, pytest.mark.browser]


@pytest.fixture
def slurm():
    fixture = SlurmFixture()
    yield fixture
    fixture.cleanup()


def test_student_sees_allowed_choices_then_queue_reason_then_jupyterlab(slurm, tmp_path, artifacts_dir):
    blocker = slurm.start_blocker()
    try:
        with RunningHub(tmp_path / "hub", config=slurm.hub_config()) as hub, chromium_page() as page:
            hub_login(page, hub.url, "student", USERS["student"][0])
            page.wait_for_selector("#sg-partition", timeout=30_000)
            screenshot(page, artifacts_dir, "slurm-01-student-spawn-form")
            # only what the students group may use
            assert page.eval_on_selector_all("#sg-partition option", "os => os.map(o => o.value)") == ["debug"]
            assert page.eval_on_selector_all("#sg-account option", "os => os.map(o => o.value)") == ["teaching"]
            assert page.get_attribute("#sg-cores", "max") == "1"
            assert page.get_attribute("#sg-memory_gb", "max") == "1"
            assert page.get_attribute("#sg-walltime_hours", "max") == "1"
            assert page.query_selector("#sg-gpus") is None

            page.click("form input[type=submit], form button[type=submit]")
            # the pending page shows what the queue says
            page.wait_for_selector("text=is queued in partition debug, waiting for", timeout=60_000)
            # Slurm's backfill scheduler (every 5 s on the test cluster) adds an estimated start
            page.wait_for_selector("text=estimated start", timeout=60_000)
            screenshot(page, artifacts_dir, "slurm-02-pending-queue-reason")
            assert "is queued in partition debug" in page.inner_text("body")

            subprocess.run(["scancel", blocker], check=True, timeout=30)
            page.wait_for_url("**/user/student/lab**", timeout=120_000)
            page.wait_for_selector("#jp-main-dock-panel", timeout=90_000)
            page.wait_for_selector(".jp-Launcher", timeout=60_000)
            screenshot(page, artifacts_dir, "slurm-03-jupyterlab")
            assert "JupyterLab" in page.title()
            job = slurm.jobs()["student"]
            assert (job["partition"], job["account"], job["state"]) == ("debug", "teaching", "RUNNING")
    finally:
        subprocess.run(["scancel", blocker], timeout=30, check=False)
