"""The Kubernetes spawner in headless Chromium: a restricted-group user sees only their node pools
and limits, then JupyterLab in a pod; a pod asking more CPU than any node has shows the
scheduler's reason on the spawn page.
"""

import pytest
from kube_e2e import USERS, login, wait_pods_gone
from sgtest.browser import chromium_page, hub_login, screenshot

pytestmark = [pytest.mark.kubernetes, pytest.mark.hub, pytest.mark.browser]


def test_student_sees_only_the_students_pool_and_limits_then_jupyterlab(kube, namespace, kube_hub, artifacts_dir):
    with chromium_page() as page:
        hub_login(page, kube_hub.url, "student", USERS["student"][0])
        page.wait_for_selector("#sg-partition", timeout=30_000)
        screenshot(page, artifacts_dir, "kube-01-student-spawn-form")
        assert page.eval_on_selector_all("#sg-partition option", "os => os.map(o => o.value)") == ["debug"]
        assert page.eval_on_selector_all("#sg-account option", "os => os.map(o => o.value)") == ["teaching"]
        assert page.get_attribute("#sg-cores", "max") == "1"
        assert page.get_attribute("#sg-memory_gb", "max") == "1"
        assert page.get_attribute("#sg-walltime_hours", "max") == "1"
        assert page.query_selector("#sg-gpus") is None
        assert "profile" not in page.content()

        page.click("form input[type=submit], form button[type=submit]")
        page.wait_for_url("**/user/student/lab**", timeout=150_000)
        page.wait_for_selector(".jp-Launcher", timeout=90_000)
        screenshot(page, artifacts_dir, "kube-02-student-jupyterlab-in-a-pod")
        assert "JupyterLab" in page.title()
    pod = kube.user_pods(namespace, "student")[0]
    assert pod["metadata"]["labels"]["science-gateway.io/partition"] == "debug"
    assert pod["metadata"]["labels"]["science-gateway.io/account"] == "teaching"
    assert pod["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "1"
    login(kube_hub, "student").ensure_stopped("student")
    wait_pods_gone(kube, namespace, "student")


def test_an_astronomer_sees_the_gpu_field_and_a_pending_pod_shows_the_schedulers_reason(
    kube, namespace, kube_hub, artifacts_dir
):
    with chromium_page() as page:
        hub_login(page, kube_hub.url, "demo", USERS["demo"][0])
        page.wait_for_selector("#sg-partition", timeout=30_000)
        assert page.eval_on_selector_all("#sg-partition option", "os => os.map(o => o.value)") == [
            "cpu", "gpu", "huge", "long",
        ]
        assert page.query_selector("#sg-gpus") is not None
        page.select_option("#sg-partition", "huge")
        assert page.get_attribute("#sg-cores", "max") == "64"
        page.fill("#sg-cores", "64")
        page.fill("#sg-memory_gb", "1")
        screenshot(page, artifacts_dir, "kube-03-astro-spawn-form-huge")
        page.click("form input[type=submit], form button[type=submit]")
        # the spawn page's progress log shows the scheduler's FailedScheduling event
        page.wait_for_selector("text=Insufficient cpu", timeout=90_000)
        screenshot(page, artifacts_dir, "kube-04-pending-scheduler-reason")
        assert "nodes are available" in page.inner_text("body")
    assert [p["status"]["phase"] for p in kube.user_pods(namespace, "demo")] == ["Pending"]
    login(kube_hub, "demo").ensure_stopped("demo")
    wait_pods_gone(kube, namespace, "demo")
