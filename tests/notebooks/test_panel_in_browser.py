"""The JupyterLab side panel in headless Chromium, on the embedded default: an astronomer finds,
stages and uses data and runs a Dask cluster without writing code; the panel is quiet while hidden,
works from the keyboard and reads in the dark theme. Screenshots ``panel-embedded-*``."""

import re
from urllib.parse import urlsplit

import pytest

from sgtest.browser import (
    chromium_page,
    gateway_calls_while,
    hub_login,
    open_panel,
    panel_tab,
    run_panel,
    screenshot,
)

pytestmark = [pytest.mark.browser, pytest.mark.hub]

TAPE_DATASET = "demo:run2024.raw.0002"  # on tape in the bundled demo catalogue: a recall of a few seconds


def test_panel_search_stage_insert_paths_and_cluster(embedded_hub, artifacts_dir):
    failed = f"{artifacts_dir}/panel-embedded-FAILED.png"
    with chromium_page(viewport=(1400, 1000), failure_screenshot=failed) as page:
        hub_login(page, embedded_hub.url, "demo", "demo")
        page.wait_for_url("**/user/demo/lab**", timeout=90_000)
        seen = run_panel(page, embedded_hub.url, "demo", TAPE_DATASET, artifacts_dir, "panel-embedded",
                         pattern="run2024*", filters="datatype=RAW")

        # found on tape, with its size and files; recalled, then ready with 4 local paths
        assert "on tape" in seen["row"] and "4 files" in seen["row"], seen["row"]
        assert "demo:run2024.raw.0001" in seen["results"]
        assert "recalling from tape" in seen["first_words"] or "ready" in seen["first_words"], seen
        assert len(seen["paths"]) == 4 and all(p.startswith("/") for p in seen["paths"]), seen["paths"]
        # the inserted cell: the Python API for that dataset, and it gave the same paths
        assert f'catalog.stage("{TAPE_DATASET}")' in seen["cell_source"], seen["cell_source"]
        for path in seen["paths"]:
            assert path in seen["cell_output"], seen["cell_output"]
        # the embedded presets, smallest first; 2 workers connected; the dashboard through the server
        assert seen["presets"].startswith("small"), seen["presets"]
        assert re.search(r"Up to \d+ workers", seen["limit"]), seen["limit"]
        dashboard = urlsplit(seen["dashboard_src"])
        assert dashboard.netloc == urlsplit(embedded_hub.url).netloc, seen["dashboard_src"]
        assert dashboard.path.startswith("/user/demo/proxy/") and dashboard.path.endswith("/status"), dashboard
        assert seen["dashboard_status"] == 200 and seen["dashboard_tab"].startswith("Dask small")
        # closed: the server holds no cluster any more
        held = page.evaluate(
            """async () => {
                const xsrf = (document.cookie.match(/(?:^|; )_xsrf=([^;]*)/) || [])[1] || '';
                const r = await fetch('/user/demo/gateway/api/dask/clusters',
                                      {headers: {'X-XSRFToken': decodeURIComponent(xsrf)}});
                return await r.json();
            }""")
        assert held == {"clusters": []}


def test_panel_is_quiet_while_hidden_keyboard_and_dark_theme(embedded_hub, artifacts_dir):
    failed = f"{artifacts_dir}/panel-embedded-keys-FAILED.png"
    with chromium_page(viewport=(1400, 900), failure_screenshot=failed) as page:
        hub_login(page, embedded_hub.url, "demo", "demo")
        page.wait_for_url("**/user/demo/lab**", timeout=90_000)
        page.wait_for_selector("#jp-main-dock-panel", timeout=90_000)
        page.wait_for_selector(".jp-SideBar [data-id='science-gateway-panel']", timeout=60_000)
        panel = open_panel(page)

        # the keyboard: arrows move between the tabs, Enter searches, Tab reaches the results
        data_tab = panel.locator(".sg-tab[data-tab='Data']")
        data_tab.focus()
        page.keyboard.press("ArrowRight")
        assert panel.locator(".sg-tab[aria-selected='true']").inner_text() == "Requests"
        assert page.evaluate("document.activeElement.dataset.tab") == "Requests"
        page.keyboard.press("ArrowLeft")
        panel.locator(".sg-pattern").focus()
        page.keyboard.type("run2024*")
        page.keyboard.press("Enter")
        panel.locator(".sg-dataset").first.wait_for(timeout=30_000)
        panel.locator(".sg-dataset .sg-stage").first.focus()
        assert page.evaluate("document.activeElement.textContent") == "Stage"

        # an error shows the API's own message
        panel.locator(".sg-pattern").fill("demo:../x")
        panel.locator(".sg-pattern").press("Enter")
        error = panel.locator(".sg-data .sg-error")
        error.wait_for(timeout=30_000)
        page.wait_for_function("el => el.textContent.length > 0", arg=error.element_handle(), timeout=30_000)
        assert ".." in error.inner_text(), error.inner_text()

        # the Requests tab asks when shown, and not at all once the sidebar is collapsed; opening
        # it again asks at once
        calls = []
        page.on("request", lambda r: calls.append(r.url) if "/gateway/api/" in r.url else None)
        panel_tab(page, "Requests")
        page.wait_for_timeout(3_000)
        assert any(urlsplit(u).path.endswith("/gateway/api/requests") for u in calls), calls
        page.locator(".jp-SideBar [data-id='science-gateway-panel']").click()  # collapse
        panel.wait_for(state="hidden", timeout=10_000)
        assert gateway_calls_while(page, 8) == []
        calls.clear()
        open_panel(page)
        page.wait_for_timeout(2_000)
        assert any(urlsplit(u).path.endswith("/gateway/api/requests") for u in calls), calls

        # dark theme (as the Settings menu sets it): the panel follows JupyterLab's theme variables
        set_theme(page, "JupyterLab Dark")
        page.reload()
        page.wait_for_function("document.body.dataset.jpThemeLight === 'false'", timeout=60_000)
        panel = open_panel(page) if not page.locator("#science-gateway-panel").is_visible() else panel
        panel.locator(".sg-pattern").fill("run2024*")
        panel.locator(".sg-pattern").press("Enter")
        panel.locator(".sg-dataset").first.wait_for(timeout=30_000)
        page.wait_for_timeout(1_000)
        colours = page.evaluate(
            """() => {
                const panel = document.querySelector('#science-gateway-panel');
                const did = panel.querySelector('.sg-did');
                return [getComputedStyle(panel).backgroundColor, getComputedStyle(did).color];
            }""")
        background, text = ([int(c) for c in re.findall(r"\d+", colour)[:3]] for colour in colours)
        assert max(background) < 100 and min(text) > 150, colours  # light text on a dark panel
        screenshot(page, artifacts_dir, "panel-embedded-07-dark-theme")
        set_theme(page, "JupyterLab Light")


def set_theme(page, theme: str) -> None:
    """JupyterLab's theme setting, through its settings API (what Settings > Theme writes)."""
    status = page.evaluate(
        """async theme => {
            const xsrf = (document.cookie.match(/(?:^|; )_xsrf=([^;]*)/) || [])[1] || '';
            const r = await fetch('/user/demo/lab/api/settings/@jupyterlab/apputils-extension:themes', {
                method: 'PUT', headers: {'X-XSRFToken': decodeURIComponent(xsrf), 'Content-Type': 'application/json'},
                body: JSON.stringify({raw: JSON.stringify({theme})})});
            return r.status;
        }""",
        theme,
    )
    assert status == 204, status
