"""The staging monitor in real JupyterLab (headless Chromium): the front end counts its views,
so the monitor's background refresh runs while it is displayed and follows a tape recall to ready.

Without the front end's ``_view_count`` updates the monitor would never refresh on its own (it
polls only while a view is displayed); the pure schedule is tested in test_widget_state.py.
"""

import pytest

from sgtest.browser import WALKTHROUGH, chromium_page, hub_login, run_cell_containing

pytestmark = [pytest.mark.browser, pytest.mark.hub]

TAPE_DATASET = "demo:run2024.raw.0002"  # on tape in the bundled demo catalogue: a recall of a few seconds


def test_the_displayed_monitor_follows_a_tape_recall_to_ready(embedded_hub, artifacts_dir):
    failed = f"{artifacts_dir}/monitor-FAILED.png"
    with chromium_page(viewport=(1400, 1000), failure_screenshot=failed) as page:
        hub_login(page, embedded_hub.url, "demo", "demo")
        page.wait_for_url("**/user/demo/lab**", timeout=90_000)
        page.goto(f"{embedded_hub.url}/user/demo/lab/tree/{WALKTHROUGH}")
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
        browser = run_cell_containing(page, "DatasetBrowser()").locator(".sg-dataset-browser")
        row = browser.locator(".sg-results .widget-hbox", has_text=TAPE_DATASET)
        row.wait_for(timeout=60_000)
        request = browser.locator(".sg-staging-monitor .sg-request", has_text=TAPE_DATASET)
        row.get_by_role("button", name="Stage").click()
        # the Stage button's own refresh shows the recall starting; only the background refresh
        # (which runs because the front end reports a displayed view) can show it finished
        request.locator(".sg-state", has_text="recalling from tape").wait_for(timeout=30_000)
        request.locator(".sg-state", has_text="ready").wait_for(timeout=60_000)
        assert len(request.locator(".sg-paths textarea").input_value().splitlines()) == 4
