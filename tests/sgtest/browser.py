"""Headless Debian Chromium driven by Playwright (see ../shared/SERVICES.md for the flags)."""

from __future__ import annotations

import contextlib
import os
import tempfile

from .services import require_chromium

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.contextmanager
def chromium_page(viewport=(1280, 800), failure_screenshot: str | None = None):
    """A fresh headless Chromium (its own profile dir) and one page; closed on exit.

    With ``failure_screenshot`` (a PNG path), an exception inside the block saves what the page
    showed at that moment before it propagates.
    """
    executable = require_chromium()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="sg-chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": viewport[0], "height": viewport[1]},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            try:
                yield page
            except Exception:
                if failure_screenshot:
                    page.screenshot(path=failure_screenshot, full_page=True)
                raise
        finally:
            context.close()


def screenshot(page, artifacts_dir: str, name: str) -> str:
    """Save a full-page PNG under the artifacts dir and return its path."""
    path = os.path.join(artifacts_dir, f"{name}.png")
    page.screenshot(path=path, full_page=True)
    return path


def hub_login(page, hub_url: str, username: str, password: str):
    """Log in through the hub's own login form, as a person would."""
    page.goto(f"{hub_url}/hub/login")
    page.fill("#username_input", username)
    page.fill("#password_input", password)
    page.click("#login_submit")


# -- JupyterLab notebooks ------------------------------------------------------------------------


def accept_kernel_dialog(page):
    """Take JupyterLab's preferred kernel when it asks (a notebook reopened after its kernel ended)."""
    dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
    if dialog.count():
        dialog.get_by_role("button", name="Select").click()
        dialog.wait_for(state="detached", timeout=30_000)


def run_cell_containing(page, text: str, attempts: int = 4):
    """Run the code cell whose source contains ``text`` (Shift+Enter) and wait until it ran.

    JupyterLab can drop a run sent right after the kernel starts (SERVICES.md), so a run whose
    prompt is still ``[ ]`` after a while is sent again; a "Select Kernel" dialog (the notebook
    was reopened after its kernel ended) is answered with the preferred kernel.
    """
    cell = page.locator(".jp-CodeCell", has=page.locator(".jp-InputArea-editor", has_text=text)).first
    prompt = cell.locator(".jp-InputPrompt")
    for _ in range(attempts):
        accept_kernel_dialog(page)
        try:
            cell.locator(".jp-InputArea-editor").click(timeout=10_000)  # a dialog may cover it
            page.keyboard.press("Shift+Enter")
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


WALKTHROUGH = "examples/01-astronomer-walkthrough.ipynb"


def run_walkthrough(page, hub_url: str, username: str, did: str, artifacts_dir: str, prefix: str, *,
                    while_staging=contextlib.nullcontext, on_cluster=None, timeout_ms: float = 120_000) -> dict:
    """Run the astronomer's walkthrough in JupyterLab as a person would; return what they saw.

    The user is logged in and their server is up. Open the example the gateway put in their home,
    run the browser cell, see ``did`` among the results, press its Stage button (inside
    ``while_staging()``, e.g. a context that runs Rucio's transfer daemons), watch the request reach
    ready with its local paths; run the scripted stage cell (it reuses the request); start a Dask
    cluster from the launcher, see 2 workers connect (then ``on_cluster()``), open the dashboard
    link through the hub, run the analysis, see the plot, close the cluster. Screenshots
    ``{prefix}-01`` to ``-06`` go to ``artifacts_dir``.
    """
    seen = {}
    page.goto(f"{hub_url}/user/{username}/lab/tree/{WALKTHROUGH}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
    screenshot(page, artifacts_dir, f"{prefix}-01-notebook-open")

    browser = run_cell_containing(page, "DatasetBrowser()").locator(".sg-dataset-browser")
    browser.wait_for(timeout=60_000)
    results = browser.locator(".sg-results")
    row = results.locator(".widget-hbox", has_text=did)
    row.wait_for(timeout=60_000)
    seen["results"], seen["row"] = results.inner_text(), row.inner_text()
    screenshot(page, artifacts_dir, f"{prefix}-02-browser-rendered")

    request = browser.locator(".sg-staging-monitor .sg-request", has_text=did)
    with while_staging():
        row.get_by_role("button", name="Stage").click()
        request.locator(".sg-state", has_text="ready").wait_for(timeout=timeout_ms)
    paths = request.locator(".sg-paths textarea")
    paths.wait_for(timeout=10_000)
    seen["paths"] = paths.input_value().splitlines()
    seen["request"] = request.inner_text()
    screenshot(page, artifacts_dir, f"{prefix}-03-staged-ready")

    # the scripted stage cell reuses the request and hands `paths` to the kernel
    wait_until_ran(page, run_cell_containing(page, "catalog.stage(dataset.did)"), timeout=timeout_ms)

    launcher = run_cell_containing(page, "ClusterLauncher()").locator(".sg-cluster-launcher")
    launcher.wait_for(timeout=60_000)
    seen["presets"] = launcher.locator("select").inner_text()
    launcher.get_by_role("button", name="Scale").click()
    launcher.locator(".sg-worker-count", has_text="2 of 2 workers connected").wait_for(timeout=timeout_ms)
    seen["dashboard_href"] = href = launcher.locator(".sg-dashboard a").get_attribute("href")
    screenshot(page, artifacts_dir, f"{prefix}-04-cluster-workers")
    if on_cluster is not None:
        on_cluster()

    dashboard = page.context.new_page()
    seen["dashboard_status"] = dashboard.goto(f"{hub_url}{href}").status
    dashboard.wait_for_selector(".bk-root, .bk-Column, [data-root-id]", timeout=60_000)
    seen["dashboard_title"] = dashboard.title()
    dashboard.wait_for_timeout(2_000)  # let Bokeh draw the plots
    screenshot(dashboard, artifacts_dir, f"{prefix}-05-dask-dashboard")
    dashboard.close()

    wait_until_ran(page, run_cell_containing(page, "client.gather("), timeout=180_000)
    plot = run_cell_containing(page, "plt.subplots(")
    wait_until_ran(page, plot)
    plot.locator(".jp-OutputArea-output img").wait_for(timeout=30_000)
    plot.scroll_into_view_if_needed()
    screenshot(page, artifacts_dir, f"{prefix}-06-plot")
    wait_until_ran(page, run_cell_containing(page, "launcher.close_cluster()"))
    launcher.locator(".sg-worker-count", has_text="No cluster running.").wait_for(timeout=60_000)
    return seen
