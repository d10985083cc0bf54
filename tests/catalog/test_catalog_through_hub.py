"""The notebook Python API against a user's server behind a real JupyterHub.

A kernel under JupyterHub finds its server through $JUPYTERHUB_SERVICE_URL and authenticates with
$JUPYTERHUB_API_TOKEN; here the same environment points at the hub's proxy with a token the user
made, and the default ``science_gateway.catalog`` calls stage a dataset and wait for it.
"""

import os

import pytest

from science_gateway import catalog

pytestmark = pytest.mark.hub


def test_python_api_stages_through_the_hub(demo_session, monkeypatch):
    demo_session.start_server("demo")
    r = demo_session.http.post(
        f"{demo_session.hub.url}/hub/api/users/demo/tokens",
        json={"note": "catalog test", "expires_in": 600},
        headers=demo_session.xsrf_headers(),
        timeout=30,
    )
    assert r.status_code in (200, 201), r.text
    monkeypatch.delenv("SCIENCE_GATEWAY_API_URL", raising=False)
    monkeypatch.setenv("JUPYTERHUB_SERVICE_URL", f"{demo_session.hub.url}/user/demo/")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", r.json()["token"])
    monkeypatch.setattr(catalog, "_default", None)

    page = catalog.search("run2024*", filters={"datatype": "CALIB"})
    assert [d.did for d in page.datasets] == ["demo:run2024.calib.0001"]
    request = catalog.stage("demo:run2024.calib.0001")
    done = catalog.wait(request, timeout=60, interval=0.2)
    assert done.state == "ready" and len(done.paths) == 2
    for path in catalog.paths(done):
        assert os.path.isfile(path)
    assert [r.id for r in catalog.requests()] == [request.id]
    with pytest.raises(catalog.CatalogAPIError) as e:
        catalog.stage("demo:../../etc/passwd")
    assert e.value.status == 400
    catalog.cancel(done)
    assert catalog.requests() == []


def test_the_readme_api_url_in_a_fresh_browser_goes_through_the_login(demo_session):
    """The README's example URL opened before JupyterLab: a login, not a bare 'Forbidden'."""
    import requests

    demo_session.start_server("demo")
    url = f"{demo_session.hub.url}/user/demo/gateway/api/datasets?pattern=run2024*"
    browser = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
    fresh = requests.get(url, headers=browser, allow_redirects=False, timeout=30)
    assert fresh.status_code == 302, fresh.text[:300]
    assert "/hub/api/oauth2/authorize" in fresh.headers["Location"]
    # a browser that is logged in at the hub follows the redirects to the answer
    answer = demo_session.http.get(url, headers=browser, timeout=30)
    assert answer.status_code == 200, answer.text[:300]
    assert "demo:run2024.raw.0001" in {d["did"] for d in answer.json()["datasets"]}
    # a script without a token gets a JSON message saying how to log in
    script = requests.get(url, allow_redirects=False, timeout=30)
    assert script.status_code == 403
    message = script.json()["message"]
    assert "not logged in" in message and "/hub/login" in message and "Authorization: token" in message
