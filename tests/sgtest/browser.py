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


# -- the JupyterLab side panel -------------------------------------------------------------------

PANEL = "#science-gateway-panel"


def open_panel(page):
    """Open the gateway's side panel from JupyterLab's left sidebar, as a person would."""
    page.locator(".jp-SideBar [data-id='science-gateway-panel']").click()
    panel = page.locator(PANEL)
    panel.wait_for(state="visible", timeout=30_000)
    return panel


def panel_tab(page, name: str):
    page.locator(f"{PANEL} .sg-tab[data-tab='{name}']").click()
    return page.locator(f"{PANEL} .sg-{name.lower()}")


def new_notebook(page, hub_url: str, username: str):
    """JupyterLab with a new, empty notebook open and its kernel idle (a fresh workspace: ``?reset``
    drops what an earlier visit left open, so the launcher shows)."""
    page.goto(f"{hub_url}/user/{username}/lab?reset")
    page.wait_for_selector(".jp-Launcher", timeout=90_000)
    page.locator(".jp-LauncherCard[data-category='Notebook']").first.click()
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)


def gateway_calls_while(page, seconds: float) -> list[str]:
    """The gateway API calls the page makes during ``seconds`` (what the panel polls)."""
    calls: list[str] = []

    def seen(request):
        if "/gateway/api/" in request.url:
            calls.append(request.url)

    page.on("request", seen)
    try:
        page.wait_for_timeout(seconds * 1000)
    finally:
        page.remove_listener("request", seen)
    return calls


def run_panel(page, hub_url: str, username: str, did: str, artifacts_dir: str, prefix: str, *, pattern: str,
              filters: str, while_staging=contextlib.nullcontext, on_cluster=None, timeout_ms: float = 120_000) -> dict:
    """What an astronomer does in the side panel without writing code; returns what they saw.

    The user is logged in and their server is up. In a new notebook: open the panel, search by name
    and metadata, see ``did`` among the results, Stage it (inside ``while_staging()``), watch the
    request reach ready in Requests with its local paths, Insert paths into the notebook and run
    that cell; in Clusters start a cluster of 2 workers, see them connect (then ``on_cluster()``),
    open the dashboard in a JupyterLab tab, close the cluster. Screenshots ``{prefix}-01`` to ``-06``.
    """
    seen: dict = {}
    new_notebook(page, hub_url, username)
    panel = open_panel(page)

    data = panel.locator(".sg-data")
    data.locator(".sg-pattern").fill(pattern)
    data.locator(".sg-filters").fill(filters)
    data.locator(".sg-filters").press("Enter")
    row = data.locator(f".sg-dataset[data-did='{did}']")
    row.wait_for(timeout=60_000)
    seen["row"] = row.inner_text()
    seen["results"] = data.locator(".sg-results").inner_text()
    screenshot(page, artifacts_dir, f"{prefix}-01-panel-search")

    with while_staging():
        row.get_by_role("button", name="Stage").click()
        row.locator(".sg-row-note", has_text="see Requests").wait_for(timeout=30_000)
        requests_tab = panel_tab(page, "Requests")
        request = requests_tab.locator(f".sg-request[data-did='{did}']")
        request.wait_for(timeout=30_000)
        seen["first_words"] = request.locator(".sg-words").inner_text()
        request.locator(".sg-words", has_text="ready").wait_for(timeout=timeout_ms)
    request.locator(".sg-paths summary").click()
    seen["paths"] = request.locator(".sg-paths li").all_inner_texts()
    seen["request"] = request.inner_text()
    screenshot(page, artifacts_dir, f"{prefix}-02-panel-request-ready")

    request.get_by_role("button", name="Insert paths").click()
    cell = run_cell_containing(page, "catalog.wait(catalog.stage(")
    wait_until_ran(page, cell, timeout=timeout_ms)
    seen["cell_source"] = cell.locator(".jp-InputArea-editor").inner_text()
    seen["cell_output"] = "\n".join(cell.locator(".jp-OutputArea-output").all_inner_texts())
    screenshot(page, artifacts_dir, f"{prefix}-03-panel-paths-in-notebook")

    clusters = panel_tab(page, "Clusters")
    clusters.locator(".sg-preset option").first.wait_for(state="attached", timeout=30_000)
    seen["presets"] = clusters.locator(".sg-preset").inner_text()
    seen["limit"] = clusters.locator(".sg-limit").inner_text()
    clusters.locator(".sg-workers").fill("2")
    clusters.get_by_role("button", name="Start cluster").click()
    cluster = clusters.locator(".sg-cluster")
    cluster.locator(".sg-worker-count", has_text="2 of 2 workers connected").wait_for(timeout=timeout_ms)
    seen["cluster"] = cluster.inner_text()
    screenshot(page, artifacts_dir, f"{prefix}-04-panel-cluster-workers")
    if on_cluster is not None:
        on_cluster()

    cluster.get_by_role("button", name="Dashboard").click()
    frame = page.locator("#jp-main-dock-panel .jp-MainAreaWidget iframe").last
    frame.wait_for(timeout=30_000)
    seen["dashboard_src"] = src = frame.get_attribute("src")
    seen["dashboard_tab"] = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current").inner_text()
    seen["dashboard_status"] = page.evaluate("async src => (await fetch(src, {credentials: 'same-origin'})).status", src)
    page.frame_locator("#jp-main-dock-panel .jp-MainAreaWidget iframe >> nth=-1").locator(
        ".bk-root, .bk-Column, [data-root-id]").first.wait_for(timeout=60_000)
    page.wait_for_timeout(2_000)  # let Bokeh draw the plots
    screenshot(page, artifacts_dir, f"{prefix}-05-panel-dashboard-tab")

    cluster.get_by_role("button", name="Close").click()
    cluster.wait_for(state="detached", timeout=60_000)
    screenshot(page, artifacts_dir, f"{prefix}-06-panel-cluster-closed")
    return seen
