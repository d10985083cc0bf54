"""A person runs the astronomer's walkthrough in JupyterLab on the embedded default, in headless Chromium.

Log in, open the example the gateway put in the home folder, run the browser cell, see the widgets
render, press Stage, watch the request reach ready with its local paths listed; then start a Dask
cluster from the launcher, see its workers connect, open the dashboard link through the hub, run
the analysis and see the plot (``sgtest.browser.run_walkthrough``). The same walk on Slurm and
Rucio is tests/notebooks/test_walkthrough_real_stack_browser.py.
"""

import pytest

from sgtest.browser import chromium_page, hub_login, run_walkthrough

pytestmark = [pytest.mark.browser, pytest.mark.hub]


def test_walkthrough_stage_in_from_the_widget(embedded_hub, artifacts_dir):
    failed = f"{artifacts_dir}/walkthrough-FAILED.png"
    with chromium_page(viewport=(1400, 1000), failure_screenshot=failed) as page:
        hub_login(page, embedded_hub.url, "demo", "demo")
        page.wait_for_url("**/user/demo/lab**", timeout=90_000)
        seen = run_walkthrough(page, embedded_hub.url, "demo", "demo:run2024.raw.0001", artifacts_dir, "walkthrough")

    assert "on tape" in seen["results"]  # run2024.raw.0002 lives on tape
    assert len(seen["paths"]) == 3 and all(p.endswith(".csv") for p in seen["paths"]), seen["paths"]
    assert "small" in seen["presets"]
    href = seen["dashboard_href"]
    assert href.startswith("/user/demo/proxy/") and href.endswith("/status"), href
    assert seen["dashboard_status"] == 200 and "Dask" in seen["dashboard_title"], seen
