"""A person in headless Chromium: log in to the embedded default and land in JupyterLab."""

import pytest

from sgtest.browser import chromium_page, hub_login, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.hub]


def test_login_reaches_jupyterlab(embedded_hub, artifacts_dir):
    with chromium_page() as page:
        page.goto(f"{embedded_hub.url}/hub/login")
        screenshot(page, artifacts_dir, "embedded-01-login")
        hub_login(page, embedded_hub.url, "demo", "demo")
        # The embedded default has no options form: login spawns and JupyterLab loads.
        page.wait_for_url("**/user/demo/lab**", timeout=90_000)
        page.wait_for_selector("#jp-main-dock-panel", timeout=90_000)
        page.wait_for_selector(".jp-Launcher", timeout=60_000)
        assert "JupyterLab" in page.title()
        # no "Jupyter news?" prompt over the user's work: the gateway disables JupyterLab's
        # announcements plugin (its page_config.d), which is what asks once the app is restored
        disabled = page.evaluate("JSON.parse(document.getElementById('jupyter-config-data').textContent).disabledExtensions")
        assert "@jupyterlab/apputils-extension:announcements" in disabled, disabled
        page.wait_for_timeout(3_000)
        assert page.get_by_text("notified about official Jupyter news").count() == 0
        screenshot(page, artifacts_dir, "embedded-02-jupyterlab")
        # The page calls our API as JupyterLab's ServerConnection does: cookie plus XSRF header.
        api = page.evaluate(
            """async () => {
                const xsrf = (document.cookie.match(/(?:^|; )_xsrf=([^;]*)/) || [])[1] || '';
                const r = await fetch('/user/demo/gateway/api/',
                                      {credentials: 'same-origin', headers: {'X-XSRFToken': decodeURIComponent(xsrf)}});
                return {status: r.status, body: await r.json()};
            }"""
        )
        assert api["status"] == 200
        assert api["body"]["catalog"]["name"] == "Demo catalogue"
