"""A person runs the astronomer's walkthrough in JupyterLab, in headless Chromium.

Log in, open the example the gateway put in the home folder, run the browser cell, see the widgets
render, press Stage, watch the request reach ready with its local paths listed; then start a Dask
cluster from the launcher, see its workers connect, open the dashboard link through the hub, run
the analysis and see the plot.
"""

import pytest

from sgtest.browser import chromium_page, hub_login, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.hub]

NOTEBOOK = "examples/01-astronomer-walkthrough.ipynb"


def run_cell_containing(page, text: str, attempts: int = 4):
    """Run the code cell whose source contains ``text`` (Shift+Enter) and wait until it ran.

    JupyterLab can drop a run sent right after the kernel starts (SERVICES.md), so a run whose
    prompt is still ``[ ]`` after a while is sent again.
    """
    cell = page.locator(".jp-CodeCell", has=page.locator(".jp-InputArea-editor", has_text=text)).first
    prompt = cell.locator(".jp-InputPrompt")
    for _ in range(attempts):
        cell.locator(".jp-InputArea-editor").click()
        page.keyboard.press("Shift+Enter")
        try:
            page.wait_for_function(
                "el => /\\[(\\*|\\d+)\\]/.test(el.textContent)", arg=prompt.element_handle(), timeout=10_000
            )
            return cell
        except Exception:
            continue
    raise AssertionError(f"JupyterLab did not run the cell containing {text!r}")


def wait_until_ran(page, cell, timeout: float = 120_000):
    """Wait until the cell's prompt shows an execution count (it finished)."""
    prompt = cell.locator(".jp-InputPrompt")
    page.wait_for_function("el => /\\[\\d+\\]/.test(el.textContent)", arg=prompt.element_handle(), timeout=timeout)
    outputs = "\n".join(cell.locator(".jp-OutputArea-output").all_inner_texts())
    assert "Traceback" not in outputs, outputs[-2000:]
    return cell


def test_walkthrough_stage_in_from_the_widget(embedded_hub, artifacts_dir):
    failed = f"{artifacts_dir}/walkthrough-FAILED.png"
    with chromium_page(viewport=(1400, 1000), failure_screenshot=failed) as page:
        hub_login(page, embedded_hub.url, "demo", "demo")
        page.wait_for_url("**/user/demo/lab**", timeout=90_000)
        page.goto(f"{embedded_hub.url}/user/demo/lab/tree/{NOTEBOOK}")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
        screenshot(page, artifacts_dir, "walkthrough-01-notebook-open")

        cell = run_cell_containing(page, "DatasetBrowser()")
        browser = cell.locator(".sg-dataset-browser")
        browser.wait_for(timeout=60_000)
        results = browser.locator(".sg-results")
        results.get_by_text("demo:run2024.raw.0001").wait_for(timeout=30_000)
        assert "on tape" in results.inner_text()  # run2024.raw.0002 lives on tape
        screenshot(page, artifacts_dir, "walkthrough-02-browser-rendered")

        results.get_by_role("button", name="Stage").first.click()
        request = browser.locator(".sg-staging-monitor .sg-request", has_text="demo:run2024.raw.0001")
        request.locator(".sg-state", has_text="ready").wait_for(timeout=60_000)
        paths = request.locator(".sg-paths textarea")
        paths.wait_for(timeout=10_000)
        listed = paths.input_value().splitlines()
        assert len(listed) == 3 and all(p.endswith(".csv") for p in listed), listed
        screenshot(page, artifacts_dir, "walkthrough-03-staged-ready")

        # the scripted stage cell reuses the request and hands `paths` to the kernel
        wait_until_ran(page, run_cell_containing(page, "catalog.stage(dataset.did)"))

        cell = run_cell_containing(page, "ClusterLauncher()")
        launcher = cell.locator(".sg-cluster-launcher")
        launcher.wait_for(timeout=60_000)
        assert "small" in launcher.locator("select").inner_text()
        launcher.get_by_role("button", name="Scale").click()
        launcher.locator(".sg-worker-count", has_text="2 of 2 workers connected").wait_for(timeout=120_000)
        link = launcher.locator(".sg-dashboard a")
        href = link.get_attribute("href")
        assert href.startswith("/user/demo/proxy/") and href.endswith("/status"), href
        screenshot(page, artifacts_dir, "walkthrough-04-cluster-workers")

        dashboard = page.context.new_page()
        response = dashboard.goto(f"{embedded_hub.url}{href}")
        assert response.status == 200, response.status
        dashboard.wait_for_selector(".bk-root, .bk-Column, [data-root-id]", timeout=60_000)
        assert "Dask" in dashboard.title(), dashboard.title()
        dashboard.wait_for_timeout(2_000)  # let Bokeh draw the plots
        screenshot(dashboard, artifacts_dir, "walkthrough-05-dask-dashboard")
        dashboard.close()

        wait_until_ran(page, run_cell_containing(page, "client.gather("), timeout=180_000)
        plot = run_cell_containing(page, "plt.subplots(")
        wait_until_ran(page, plot)
        plot.locator(".jp-OutputArea-output img").wait_for(timeout=30_000)
        plot.scroll_into_view_if_needed()
        screenshot(page, artifacts_dir, "walkthrough-06-plot")
        wait_until_ran(page, run_cell_containing(page, "launcher.close_cluster()"))
        launcher.locator(".sg-worker-count", has_text="No cluster running.").wait_for(timeout=60_000)
