"""Launch links through the embedded default's real JupyterHub and the user's real server.

A logged-out person opens a link, logs in, and lands in JupyterLab with the library's notebook
copied into their home, the dataset written into it and staged; hostile links are refused with
the reason and start nothing.
"""

import html
import re
import time
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import pytest
import requests

pytestmark = pytest.mark.hub

NOTEBOOK = "01-astronomer-walkthrough.ipynb"
DISK = "demo:run2024.raw.0001"


def launch_url(hub, **query) -> str:
    return f"{hub.url}/hub/launch?{urlencode(query)}"


def follow(session, url: str, timeout: float = 90) -> requests.Response:
    """GET ``url`` as a browser would, waiting on the spawn-pending page (a browser's script
    would) and then going on to its ``next``."""
    deadline = time.monotonic() + timeout
    r = session.http.get(url, timeout=60)
    while "/hub/spawn-pending/" in r.url and time.monotonic() < deadline:
        onward = parse_qs(urlsplit(r.url).query).get("next", [None])[0]
        time.sleep(1)
        r = session.http.get(f"{session.hub.url}{onward}" if onward else r.url, timeout=60)
    return r


def test_a_logged_out_user_goes_through_the_login_and_lands_in_the_launched_notebook(embedded_hub):
    from sgtest.hub import HubSession

    session = HubSession(embedded_hub)
    link = launch_url(embedded_hub, notebook=NOTEBOOK, dataset=DISK)
    first = session.http.get(link, allow_redirects=False, timeout=30)
    assert first.status_code == 302
    login = first.headers["Location"]
    assert login.startswith("/hub/login") and "next=" in login
    assert parse_qs(urlsplit(login).query)["next"][0].startswith("/hub/launch?")
    # the login form, posted with the link as next (what the login page's form does)
    page = session.http.get(f"{embedded_hub.url}{login}", timeout=30)
    xsrf = re.search(r'name="_xsrf"\s+value="([^"]+)"', page.text)
    r = session.http.post(f"{embedded_hub.url}{login}", timeout=90,
                          data={"username": "demo", "password": "demo", **({"_xsrf": xsrf.group(1)} if xsrf else {})})
    if "/hub/spawn-pending/" in r.url:
        r = follow(session, r.url)
    try:
        assert r.status_code == 200, (r.url, re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", r.text))[-1500:])
        # a disk dataset is ready at once: straight into JupyterLab, the copy open
        assert urlsplit(r.url).path == f"/user/demo/lab/tree/launched/{NOTEBOOK}", r.url
        copy = session.get(f"/user/demo/api/contents/launched/{quote(NOTEBOOK)}").json()
        cells = copy["content"]["cells"]
        assert cells[0]["source"] == f'# from the launch link\ndataset = "{DISK}"'
        assert cells[0]["metadata"]["tags"] == ["injected-parameters"]
        requests_ = session.get("/user/demo/gateway/api/requests").json()["requests"]
        assert [(q["did"], q["state"]) for q in requests_ if q["did"] == DISK] == [(DISK, "ready")]

        # the same link again: the server runs, the unchanged copy and the request are reused
        again = follow(session, link)
        assert urlsplit(again.url).path == f"/user/demo/lab/tree/launched/{NOTEBOOK}"
        listing = session.get("/user/demo/api/contents/launched").json()["content"]
        assert [f["name"] for f in listing] == [NOTEBOOK]
        assert len([q for q in session.get("/user/demo/gateway/api/requests").json()["requests"] if q["did"] == DISK]) == 1
    finally:
        session.ensure_stopped("demo")


def test_a_dataset_on_tape_shows_its_progress_then_opens_the_notebook(demo_session, embedded_hub):
    tape = next(d["did"] for d in demo_session_search(demo_session) if d["availability"] == "tape")
    try:
        r = follow(demo_session, launch_url(embedded_hub, notebook=NOTEBOOK, dataset=tape))
        assert r.status_code == 200
        assert urlsplit(r.url).path == "/user/demo/gateway/launch"
        assert "Opening <code>launched/" in r.text and tape in r.text
        assert 'id="sg-progress"' in r.text and "/lab/tree/launched/" in r.text
        assert "Content-Security-Policy" in r.headers  # jupyter_server's page policy, not an API's
    finally:
        demo_session.ensure_stopped("demo")


def demo_session_search(session):
    session.start_server("demo")
    r = session.get("/user/demo/gateway/api/datasets", params={"filters": "project=run2024"})
    return r.json()["datasets"]


@pytest.mark.parametrize("query, words", [
    ({"notebook": "../../etc/passwd.ipynb"}, "must be a relative path"),
    ({"notebook": NOTEBOOK, "dataset": "nope"}, "scope:name"),
    ({"notebook": NOTEBOOK, "image": "evil:latest"}, "unknown key"),
    ({"notebook": NOTEBOOK, "cores": "2"}, "take no spawn choices"),  # the local spawner takes none
    ({"dataset": DISK}, "names no notebook"),
])
def test_hostile_links_are_refused_with_the_reason_and_start_nothing(demo_session, embedded_hub, query, words):
    demo_session.ensure_stopped("demo")
    r = demo_session.get(f"/hub/launch?{urlencode(query)}", allow_redirects=False)
    assert r.status_code == 400, (r.status_code, r.headers.get("Location"))
    assert "This launch link is refused" in r.text and words in r.text
    assert "text/html" in r.headers["Content-Type"]
    assert demo_session.server("demo") == {}  # nothing spawned


def test_the_users_server_refuses_a_notebook_its_library_lacks(demo_session):
    demo_session.start_server("demo")
    try:
        r = demo_session.get("/user/demo/gateway/launch?notebook=no-such.ipynb")
        assert r.status_code == 404
        assert "holds no notebook 'no-such.ipynb'" in html.unescape(r.text)
        r = demo_session.get(f"/user/demo/gateway/launch?{urlencode({'notebook': NOTEBOOK, 'dataset': 'demo:missing'})}")
        assert r.status_code == 404 and "no dataset 'demo:missing'" in html.unescape(r.text)
        assert demo_session.get("/user/demo/api/contents/launched").status_code in (200, 404)
    finally:
        demo_session.ensure_stopped("demo")


def test_another_user_cannot_use_the_launch_page_of_someone_elses_server(embedded_hub, demo_session):
    from sgtest.hub import OTHER_USER, HubSession

    demo_session.start_server("demo")
    try:
        other = HubSession(embedded_hub)
        assert other.login(*OTHER_USER).status_code == 200
        r = other.get(f"/user/demo/gateway/launch?notebook={NOTEBOOK}")
        assert r.status_code == 403
    finally:
        demo_session.ensure_stopped("demo")
