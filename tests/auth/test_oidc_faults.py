"""The identity provider down across a token refresh, under a logged-in user's running server (issue 18).

A real JupyterHub (the documented Check-in config) and the REAL shared OIDC provider, with the
hub's back-channel calls (token endpoint: refreshes; userinfo) going through a fault proxy of the
test's own (:class:`sgtest.fault_proxy.FaultProxy`); the browser talks to the provider directly.
The provider's access tokens live 30 s (scripts/services/oidc), so an outage of one token
lifetime spans the hub's refresh and the token's expiry.

While the provider is unreachable: the user stays logged in (cookie requests to the hub are
answered as them, /hub/home is not a redirect to the login), the hub keeps the refresh token, the
token keeper keeps the last valid token in the token file and says why it is not fresh (in the
server's log and its REST API); once the provider is back, the keeper writes a fresh, active
token by itself.
"""

from __future__ import annotations

import time

import pytest
import requests

from sgtest import oidc
from sgtest.browser import chromium_page
from sgtest.fault_proxy import FaultProxy
from sgtest.hub import RunningHub, server_environ, wait_for

pytestmark = [pytest.mark.oidc, pytest.mark.hub, pytest.mark.browser]

STYLE = "checkin"
USER = "alice"
NAME = "alice.astro-egi.eu"  # the hub username the Check-in example makes of alice


@pytest.fixture(scope="module")
def provider():
    from sgtest.services import require_chromium

    require_chromium()
    return oidc.provider()


@pytest.fixture(scope="module")
def proxy(provider):
    with FaultProxy(provider["OIDC_ISSUER"]) as running:
        yield running


@pytest.fixture(scope="module")
def gateway(provider, proxy, tmp_path_factory):
    token = oidc.admin_token()
    hub = RunningHub(tmp_path_factory.mktemp("hub-oidc-faults"), env=oidc.hub_env(STYLE, provider))
    config = oidc.site_config(STYLE, provider, hub.url, token)
    discovery = requests.get(provider["OIDC_DISCOVERY_URL"], timeout=10).json()
    auth = config[oidc.AUTHENTICATOR[STYLE]]
    auth["authorize_url"] = discovery["authorization_endpoint"]  # the browser: to the provider itself
    auth["token_url"] = proxy.route(discovery["token_endpoint"])  # the hub's own calls: through the proxy
    auth["userdata_url"] = proxy.route(discovery["userinfo_endpoint"])
    hub.extra_config = config
    with hub:
        yield hub, token


def test_provider_down_across_a_refresh_keeps_the_login_and_the_token(gateway, provider, proxy):
    hub, admin_token = gateway
    started = time.monotonic()

    def admin(path):
        return requests.get(f"{hub.url}/hub/api{path}", headers={"Authorization": f"token {admin_token}"}, timeout=30)

    with chromium_page() as page:
        oidc.browser_login(page, hub.url, USER, oidc.password(provider, USER))
        page.wait_for_url(f"**/user/{NAME}/lab**", timeout=120_000)
        browser = requests.Session()  # the person's hub cookies, for requests as them
        for c in page.context.cookies():
            browser.cookies.set(c["name"], c["value"], domain=c["domain"], path=c["path"])
    logged_in = time.monotonic() - started

    model = admin(f"/users/{NAME}").json()
    refresh_token = model["auth_state"]["refresh_token"]
    server_token = server_environ(model["servers"][""]["state"]["pid"])["JUPYTERHUB_API_TOKEN"]
    path = oidc.runtime_dir(hub.state_dir / "home" / NAME) / "bearer_token"
    wait_for(path.exists, 60, what=f"the token keeper's {path}")

    def keeper_state() -> dict:
        r = requests.get(f"{hub.url}/user/{NAME}/gateway/api/", headers={"Authorization": f"token {server_token}"},
                         timeout=30)
        r.raise_for_status()
        return r.json()["token"]

    xsrf = next((c.value for c in browser.cookies if c.name == "_xsrf" and c.path.startswith("/hub")), "")

    def still_logged_in():
        me = browser.get(f"{hub.url}/hub/api/user", headers={"X-XSRFToken": xsrf}, timeout=30)
        assert me.status_code == 200 and me.json()["name"] == NAME, (me.status_code, me.text[:200])
        home = browser.get(f"{hub.url}/hub/home", allow_redirects=False, timeout=30)
        assert home.status_code == 200, (home.status_code, home.headers.get("Location"))

    still_logged_in()
    assert keeper_state()["state"] == "fresh"

    # -- the provider unreachable from the hub for a token lifetime and a bit ----------------------
    held = path.read_text()
    expires = oidc.introspect(provider, STYLE, held)["exp"]
    proxy.down()
    outage_start = time.monotonic()
    until = outage_start + max(expires - time.time(), 0) + 8  # past the held token's expiry
    states = set()
    while time.monotonic() < until:
        still_logged_in()
        state = admin(f"/users/{NAME}").json()
        assert state["auth_state"]["refresh_token"] == refresh_token
        assert state["servers"][""]["ready"] is True
        assert path.read_text() == held, "the token keeper replaced the last valid token during the outage"
        states.add(keeper_state()["state"])
        time.sleep(2)
    stale = keeper_state()
    assert stale["state"] == "stale" and "could not refresh" in stale["message"], stale
    assert held not in str(stale)
    log = hub.log_text()
    assert f"The identity provider did not answer the token refresh of {NAME}" in log
    assert f"Token keeper ({NAME}):" in log and "could not refresh" in log
    assert proxy.counts["pass"] > 0  # the hub's calls to the provider did go through the proxy

    # -- the provider back: a fresh, active token, by itself ---------------------------------------
    proxy.pass_through()
    back = time.monotonic()
    fresh = wait_for(lambda: (t := path.read_text()) != held and t, 60, interval=0.5,
                     what="the token keeper to write a fresh token")
    recovered = time.monotonic() - back
    assert oidc.introspect(provider, STYLE, fresh)["active"] is True
    assert keeper_state()["state"] == "fresh"
    still_logged_in()
    assert admin(f"/users/{NAME}").json()["auth_state"]["refresh_token"]
    log = hub.log_text()
    assert "answers the token refresh of" in log and "fresh again" in log
    assert held not in log and fresh not in log and refresh_token not in log
    print(f"login {logged_in:.1f}s; outage {back - outage_start:.1f}s (keeper states {sorted(states)}); "
          f"fresh token {recovered:.1f}s after the provider came back")
