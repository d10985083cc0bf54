"""Federated login end to end: a real JupyterHub, the real OIDC provider, headless Chromium.

For both documented configurations (docs/examples/checkin.yaml and cilogon.yaml): a VO member logs
in through the provider's login and consent pages and lands in JupyterLab on a spawned server; a
user without an allowed membership gets the 403 page that says what is missing; an admin-group
member opens the admin page; an entitlement from an unlisted authority counts for nothing.
For Check-in, with 30 s access tokens: the running server's token file stays valid without any
browser action, is mode 0600, a kernel finds a fresh token through $BEARER_TOKEN_FILE a lifetime
later, and a server gets only its own user's access token (never auth_state or the refresh
token). Finally the hub and server logs of the whole run hold none of the issued tokens.
"""

from __future__ import annotations

import asyncio
import json
import re
import stat
import time

import pytest
import requests

from sgtest import oidc
from sgtest.browser import chromium_page, screenshot
from sgtest.hub import RunningHub, server_environ, wait_for
from sgtest.kernel import RemoteKernel
from sgtest.leaks import hub_secrets, leaks

pytestmark = [pytest.mark.oidc, pytest.mark.hub, pytest.mark.browser]

#: hub usernames the documented configs make from the provider's test users
USERNAMES = {
    "checkin": {u: f"{u}.{s}-egi.eu" for u, s in [("alice", "astro"), ("bob", "admin"), ("carol", "other"), ("mallory", "rogue")]},
    "cilogon": {u: u for u in ["alice", "bob", "carol", "mallory"]},
}
GROUPS = {
    "checkin": {"alice": ["vo.astro.example", "vo.astro.example:analysis"]},
    "cilogon": {"alice": ["CO:COU:astro:members:active"]},
}


class Gateway:
    """A running hub for one style, with the tests' admin API token."""

    def __init__(self, style, env, hub, token):
        self.style, self.env, self.hub, self.token = style, env, hub, token
        self.seen_tokens: set[str] = set()

    def api(self, path, token=None):
        return requests.get(
            f"{self.hub.url}/hub/api{path}", headers={"Authorization": f"token {token or self.token}"}, timeout=30
        )

    def user(self, name):
        r = self.api(f"/users/{name}")
        return r.json() if r.status_code == 200 else None

    def name(self, user):
        return USERNAMES[self.style][user]


@pytest.fixture(scope="module", params=["checkin", "cilogon"])
def gateway(request, tmp_path_factory, chromium):
    style = request.param
    env = oidc.provider()
    state = tmp_path_factory.mktemp(f"hub-{style}")
    token = oidc.admin_token()
    hub = RunningHub(state, env=oidc.hub_env(style, env))
    hub.extra_config = oidc.site_config(style, env, hub.url, token)
    with hub:
        yield Gateway(style, env, hub, token)


@pytest.fixture(scope="module")
def chromium():
    from sgtest.services import require_chromium

    return require_chromium()


@pytest.fixture
def shots(artifacts_dir, gateway):
    def take(page, name):
        return screenshot(page, artifacts_dir, f"oidc-{gateway.style}-{name}")

    return take


def test_member_logs_in_and_gets_jupyterlab(gateway, shots):
    name = gateway.name("alice")
    with chromium_page() as page:
        start = time.monotonic()
        oidc.browser_login(page, gateway.hub.url, "alice", oidc.password(gateway.env, "alice"), lambda n: shots(page, f"alice-{n}"))
        page.wait_for_url(f"**/user/{name}/lab**", timeout=120_000)
        page.wait_for_selector(".jp-Launcher", timeout=120_000)
        print(f"{gateway.style}: login page to JupyterLab loaded in {time.monotonic() - start:.1f}s (with screenshots)")
        shots(page, "alice-jupyterlab")
        assert f"/user/{name}/lab" in page.url
    model = gateway.user(name)
    assert model["admin"] is False
    assert sorted(model["groups"]) == GROUPS[gateway.style]["alice"]
    assert model["auth_state"]["unix_account"] == name
    assert model["auth_state"]["refresh_token"]
    assert model["servers"][""]["ready"] is True


def test_user_without_membership_gets_403_with_help(gateway, shots):
    with chromium_page() as page:
        oidc.browser_login(page, gateway.hub.url, "carol", oidc.password(gateway.env, "carol"))
        page.wait_for_selector("text=Membership needed", timeout=60_000)
        shots(page, "carol-403")
        text = page.inner_text("body")
        link = page.get_attribute("#membership-help", "href")
    assert "403" in text
    example = oidc.load_example(gateway.style)[oidc.AUTHENTICATOR[gateway.style]]
    for group in example["allowed_groups"]:
        assert group in text
    assert example["membership_help_text"] in text
    assert link == example["membership_help_url"]
    assert gateway.user(gateway.name("carol")) is None


def test_admin_group_member_opens_admin_page(gateway, shots):
    name = gateway.name("bob")
    with chromium_page() as page:
        oidc.browser_login(page, gateway.hub.url, "bob", oidc.password(gateway.env, "bob"))
        page.wait_for_url(f"**/user/{name}/**", timeout=120_000)
        page.goto(f"{gateway.hub.url}/hub/admin")
        page.wait_for_selector("text=Add Users", timeout=60_000)
        page.wait_for_selector(f"text={gateway.name('alice')}", timeout=30_000)
        shots(page, "bob-admin")
    assert gateway.user(name)["admin"] is True


def test_entitlement_from_unlisted_authority_is_ignored(gateway, shots):
    # Check-in: alice also holds vo.gateway.example:role=admin from rogue-aai.example, and is
    # not an admin; mallory holds only rogue entitlements (the allowed VO and the admin role) and
    # is refused. CILogon: mallory has no isMemberOf at all, and is refused the same way.
    assert gateway.user(gateway.name("alice"))["admin"] is False
    with chromium_page() as page:
        oidc.browser_login(page, gateway.hub.url, "mallory", oidc.password(gateway.env, "mallory"))
        page.wait_for_selector("text=Membership needed", timeout=60_000)
        shots(page, "mallory-403")
        assert "403" in page.inner_text("body")
    assert gateway.user(gateway.name("mallory")) is None


def token_file(gateway, user):
    home = gateway.hub.state_dir / "home" / gateway.name(user)
    return oidc.runtime_dir(home) / "bearer_token"


def test_token_file_stays_active_for_three_lifetimes(gateway):
    ttl = int(gateway.env["OIDC_ACCESS_TOKEN_TTL"])
    path = token_file(gateway, "alice")
    wait_for(path.exists, 60, what=f"the token keeper's {path}")
    span = 3 * ttl + ttl // 2
    samples, distinct = [], set()
    start = time.monotonic()
    while True:
        token = path.read_text()
        verdict = oidc.introspect(gateway.env, gateway.style, token)
        samples.append((round(time.monotonic() - start), verdict.get("active"), verdict.get("exp")))
        distinct.add(token)
        gateway.seen_tokens.add(token)
        assert verdict.get("active") is True, f"inactive token in {path} after {samples}"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        if time.monotonic() - start >= span:
            break
        time.sleep(ttl / 3)
    # refreshed, not just one long-lived token: a new token at least once per lifetime
    assert len(distinct) >= 3, samples
    print(f"token file samples (s, active, exp): {samples}")


KERNEL_TOKEN = """
import json, os
path = os.environ.get("BEARER_TOKEN_FILE", "")
print(json.dumps({"path": path, "token": open(path).read() if path else ""}))
"""


async def test_a_kernel_finds_a_fresh_token_through_bearer_token_file(gateway):
    """What a data tool in a notebook does (WLCG discovery), in one kernel a token lifetime apart."""
    ttl = int(gateway.env["OIDC_ACCESS_TOKEN_TTL"])
    alice = gateway.name("alice")
    kernel = RemoteKernel(None, alice, hub_url=gateway.hub.url, token=server_api_token(gateway, "alice"))
    kernel.start()
    try:
        seen = []
        for round_ in range(2):
            if round_:
                await asyncio.sleep(ttl + 2)  # the first token has expired by now
            found = json.loads((await kernel.execute(KERNEL_TOKEN)).strip().splitlines()[-1])
            assert found["path"] == str(token_file(gateway, "alice"))
            token = found["token"]
            gateway.seen_tokens.add(token)
            active = oidc.introspect(gateway.env, gateway.style, token).get("active")
            assert active is True, f"the token a kernel read in round {round_} is not active"
            seen.append(token)
        assert seen[0] != seen[1], "the kernel read the same token a lifetime later"
    finally:
        kernel.shutdown()


def server_api_token(gateway, user):
    """The API token the hub gave ``user``'s running server (from its process environment)."""
    model = gateway.user(gateway.name(user))
    return server_environ(model["servers"][""]["state"]["pid"])["JUPYTERHUB_API_TOKEN"]


def test_a_server_gets_its_users_access_token_and_nothing_more(gateway):
    """The gateway's token route: the access token and its expiry, for the server's own user only;
    the users API shows a server no auth_state at all, so no refresh token reaches a kernel."""
    alice, bob = gateway.name("alice"), gateway.name("bob")
    assert gateway.user(bob) is not None
    token = server_api_token(gateway, "alice")
    route = gateway.api("/gateway/token", token=token)
    assert route.status_code == 200
    assert set(route.json()) == {"access_token", "expires_at"}
    assert oidc.introspect(gateway.env, gateway.style, route.json()["access_token"]).get("active") is True
    gateway.seen_tokens.add(route.json()["access_token"])
    assert gateway.api(f"/gateway/token/{alice}", token=token).status_code == 200
    refresh_token = gateway.user(alice)["auth_state"]["refresh_token"]
    for path in (f"/users/{alice}", f"/users/{bob}", "/users", "/user", f"/gateway/token/{alice}"):
        r = gateway.api(path, token=token)
        assert "auth_state" not in r.text and refresh_token not in r.text, path
    assert gateway.api(f"/gateway/token/{bob}", token=token).status_code == 403
    # bob's server may not read alice's token; nobody without a token
    bobs = server_api_token(gateway, "bob")
    assert gateway.api(f"/gateway/token/{alice}", token=bobs).status_code in (403, 404)
    bobs_own = gateway.api("/gateway/token", token=bobs).json()["access_token"]
    gateway.seen_tokens.add(bobs_own)
    assert bobs_own != route.json()["access_token"]
    no_token = requests.get(f"{gateway.hub.url}/hub/api/gateway/token", timeout=30)
    assert no_token.status_code == 403


def test_logs_hold_no_issued_tokens(gateway):
    """Last in the module: every token the provider issued to this hub's users, nowhere in the logs."""
    for user in ("alice", "bob"):
        model = gateway.user(gateway.name(user))
        state = model["auth_state"]
        gateway.seen_tokens.update(t for t in (state["access_token"], state["refresh_token"], state.get("id_token")) if t)
    path = token_file(gateway, "alice")
    if path.exists():
        gateway.seen_tokens.add(path.read_text())
    gateway.seen_tokens.add(server_api_token(gateway, "alice"))
    log = gateway.hub.log_text()
    assert "Token keeper: wrote a new access token" in log
    leaked = [t[:6] + "..." for t in gateway.seen_tokens if t in log]
    assert not leaked, f"tokens found in {gateway.hub.log_path}"
    # authorization codes are scrubbed too (JupyterHub's access log does; our 403 adds no other line)
    assert not re.search(r"[?&]code=(?!\[secret\])[\w-]{8,}", log), "an authorization code in the log"
    assert len(gateway.seen_tokens) >= 4
    # and the run's other secrets: the OIDC client secret, the hub's and its processes' tokens and
    # keys, the cookie secrets, the test token, the users' passwords
    others = {
        **hub_secrets(gateway.hub),
        "the OIDC client secret": oidc.client(gateway.env, gateway.style)[1],
        "the tests' admin token": gateway.token,
        **{f"{user}'s password": oidc.password(gateway.env, user) for user in ("alice", "bob")},
    }
    assert "the OIDC client secret" in others and any("CLIENT_SECRET" in name for name in others), sorted(others)
    assert not leaks(others, {str(gateway.hub.log_path): log}), leaks(others, {str(gateway.hub.log_path): log})
