"""The Check-in and CILogon authenticators' own behaviour, configured as an admin would.

Endpoints are given explicitly here (no discovery); the real provider and hub are exercised in
tests/oidc/.
"""

import asyncio
import socket
import threading

import pytest
from tornado import web
from traitlets.config import Config

from science_gateway.hub import oauth
from science_gateway.hub.checkin import CheckinAuthenticator
from science_gateway.hub.cilogon import CILogonAuthenticator

ENDPOINTS = {
    "authorize_url": "https://idp.invalid/auth",
    "token_url": "https://idp.invalid/token",
    "userdata_url": "https://idp.invalid/userinfo",
}
IDP = "https://idp.university.example/idp/shibboleth"


def checkin(**traits):
    c = Config()
    c.CheckinAuthenticator = Config({
        **ENDPOINTS,
        "allowed_groups": ["vo.astro"],
        "admin_groups": ["vo.gateway:role=admin"],
        "membership_help_url": "https://enrol.invalid/vo.astro",
        **traits,
    })
    return CheckinAuthenticator(config=c)


def cilogon(**traits):
    c = Config()
    c.CILogonAuthenticator = Config({
        **ENDPOINTS,
        "idps": {IDP: {"username_derivation": {"username_claim": "eppn", "action": "prefix", "prefix": "uni"}}},
        "allowed_groups": ["astro"],
        "admin_groups": ["admins"],
        **traits,
    })
    return CILogonAuthenticator(config=c)


def auth_state(entitlements=(), **user_info):
    return {"oauth_user": {"eduperson_entitlement": list(entitlements), **user_info}}


def test_checkin_defaults():
    a = checkin()
    assert a.manage_groups and a.enable_auth_state
    assert a.username_claim == "voperson_id"
    assert "eduperson_entitlement" in a.scope and "offline_access" in a.scope
    assert a.entitlement_authorities == {"aai.egi.eu"}
    # the documented order of the refresh timings holds for the defaults
    from science_gateway.jupyter_ext.tokens import TokenKeeper

    assert a.auth_refresh_age < TokenKeeper().refresh_margin <= a.access_token_refresh_margin


async def test_checkin_groups_count_only_listed_authorities():
    a = checkin()
    state = auth_state(
        [
            "urn:mace:egi.eu:group:vo.astro:role=member#aai.egi.eu",
            "urn:mace:egi.eu:group:vo.gateway:role=admin#rogue.example",
        ]
    )
    assert await a.get_user_groups(state) == {"vo.astro"}
    b = checkin(entitlement_authorities=["aai.egi.eu", "rogue.example"])
    assert await b.get_user_groups(state) == {"vo.astro", "vo.gateway:role=admin"}


async def test_allowed_group_member_is_allowed():
    a = checkin()
    assert await a.check_allowed("alice", {"name": "alice", "admin": False, "groups": ["vo.astro"], "auth_state": {}})


async def test_refused_user_gets_403_naming_the_membership_and_how_to_get_it():
    a = checkin(membership_help_text="Ask the VO manager.")
    model = {"name": "carol", "admin": False, "groups": ["vo.other"], "auth_state": {}}
    with pytest.raises(web.HTTPError) as e:
        await a.check_allowed("carol", model)
    assert e.value.status_code == 403
    message = e.value.jupyterhub_message
    assert "urn:mace:egi.eu:group:vo.astro:role=member#aai.egi.eu" in message
    assert "Ask the VO manager." in message
    assert 'href="https://enrol.invalid/vo.astro"' in e.value.jupyterhub_html_message


def test_refusal_html_is_escaped():
    a = checkin(membership_help_text="<script>x</script>", membership_help_url='https://x.invalid/"><b>')
    with pytest.raises(web.HTTPError) as e:
        import asyncio

        asyncio.run(a.check_allowed("c", {"name": "c", "admin": False, "groups": [], "auth_state": {}}))
    html = e.value.jupyterhub_html_message
    assert "<script>" not in html and '"><b>' not in html


def test_usernames_are_normalised():
    a = checkin()
    assert a.normalize_username("Alice.Astro@EGI.eu") == "alice.astro-egi.eu"
    b = cilogon()
    name = b.user_info_to_username({"idp": IDP, "eppn": "Bob@University.example"})
    assert b.normalize_username(name) == "uni-bob-university.example"


async def test_cilogon_groups_from_is_member_of():
    b = cilogon()
    assert b.auth_state_groups_key == "cilogon_user.isMemberOf"
    assert await b.get_user_groups({"cilogon_user": {"isMemberOf": ["astro", "x"]}}) == {"astro", "x"}


UNIX = [
    ("default-is-hub-name", {}, None, "alice.astro-egi.eu"),
    ("map", {"alice.astro-egi.eu": "alice"}, None, "alice"),
    ("hook-wins", {"alice.astro-egi.eu": "alice"}, lambda a, name, state: "astro01", "astro01"),
    ("hook-none-falls-back", {"alice.astro-egi.eu": "alice"}, lambda a, name, state: None, "alice"),
]


@pytest.mark.parametrize(("mapping", "hook", "expected"), [u[1:] for u in UNIX], ids=[u[0] for u in UNIX])
async def test_unix_account(mapping, hook, expected):
    a = checkin(unix_account_map=mapping, unix_account_hook=hook)
    model = await a.update_auth_model({"name": "alice.astro-egi.eu", "admin": None, "auth_state": {}})
    assert model["auth_state"]["unix_account"] == expected


async def test_invalid_unix_account_refuses_login():
    a = checkin(unix_account_map={"alice": "Alice Smith"})
    with pytest.raises(web.HTTPError) as e:
        await a.update_auth_model({"name": "alice", "admin": None, "auth_state": {}})
    assert e.value.status_code == 403


async def test_expiry_is_stamped_on_arrival_and_checked(monkeypatch):
    a = checkin(access_token_refresh_margin=60)

    async def token_endpoint(self, handler, params):
        return {"access_token": "t", "expires_in": 300, "token_type": "Bearer"}

    monkeypatch.setattr(oauth.OAuthenticator, "get_token_info", token_endpoint)
    monkeypatch.setattr(oauth, "utcnow", lambda: 1000.0)
    token_info = await a.get_token_info(None, {})
    state = a.build_auth_state_dict(token_info, {})
    assert state["expires_at"] == 1300
    # rebuilding auth_state later from the stored response keeps the real expiry
    monkeypatch.setattr(oauth, "utcnow", lambda: 1200.0)
    assert a.build_auth_state_dict(state["token_response"], {})["expires_at"] == 1300
    assert not a.expires_soon(state)
    monkeypatch.setattr(oauth, "utcnow", lambda: 1250.0)
    assert a.expires_soon(state)
    assert not a.expires_soon({"access_token": "t"})


async def test_discovery_needs_an_issuer():
    a = CheckinAuthenticator(oidc_issuer="")
    with pytest.raises(oauth.DiscoveryError, match="oidc_issuer"):
        await a.discover()
    with pytest.raises(oauth.DiscoveryError, match="has not completed"):
        a.authorize_url


class HangingServer:
    """A real loopback TCP server that accepts connections and never answers (a hung provider)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/realms/hung"
        self.connections = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.connections:
            conn.close()


class DiscoveryServer:
    """Serves a discovery document for ``issuer`` (set after start), counting requests."""

    def __init__(self):
        import tornado.web
        from tornado.httpserver import HTTPServer
        from tornado.netutil import bind_sockets

        server = self

        class Document(tornado.web.RequestHandler):
            def get(self):
                server.requests += 1
                self.write({"issuer": server.issuer, "authorization_endpoint": f"{server.issuer}/auth",
                            "token_endpoint": f"{server.issuer}/token", "userinfo_endpoint": f"{server.issuer}/me"})

        self.requests = 0
        sockets = bind_sockets(0, "127.0.0.1")
        self.issuer = f"http://127.0.0.1:{sockets[0].getsockname()[1]}/realms/ok"
        self.http = HTTPServer(tornado.web.Application([(r"/realms/ok/.well-known/openid-configuration", Document)]))
        self.http.add_sockets(sockets)


@pytest.fixture
def hanging():
    server = HangingServer()
    yield server
    server.close()


async def test_a_hung_provider_does_not_block_the_loop_and_its_failure_is_remembered(hanging, monkeypatch):
    """Before: urllib on the event loop, so nothing else ran until the timeout; and every login
    page asked the hung provider again."""
    now = [1000.0]
    monkeypatch.setattr(oauth, "utcnow", lambda: now[0])
    a = CheckinAuthenticator(oidc_issuer=hanging.url, oidc_discovery_timeout=1.0, oidc_discovery_retry_interval=30)
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.ensure_future(ticker())
    try:
        with pytest.raises(oauth.DiscoveryError, match="failed"):
            await a.discover()
    finally:
        task.cancel()
    assert ticks > 5  # the loop ran other work during the whole wait
    assert len(hanging.connections) == 1
    # within the retry interval: the same answer at once, the provider not asked again
    now[0] += 29
    with pytest.raises(oauth.DiscoveryError, match="failed"):
        await a.discover()
    assert len(hanging.connections) == 1
    # after it: asked again
    now[0] += 2
    with pytest.raises(oauth.DiscoveryError):
        await a.discover()
    assert len(hanging.connections) == 2


async def test_discovery_sets_the_endpoints_once():
    provider = DiscoveryServer()
    try:
        a = CheckinAuthenticator(oidc_issuer=provider.issuer)
        assert a.needs_discovery()
        await asyncio.gather(a.discover(), a.discover(), a.discover())
        assert provider.requests == 1
        assert (a.authorize_url, a.token_url, a.userdata_url) == (
            f"{provider.issuer}/auth", f"{provider.issuer}/token", f"{provider.issuer}/me")
        assert not a.needs_discovery()
        # configured endpoints: nothing to discover
        assert not checkin(oidc_issuer=provider.issuer).needs_discovery()
    finally:
        provider.http.stop()


async def test_the_login_page_says_the_provider_is_unreachable(hanging):
    a = CheckinAuthenticator(oidc_issuer=hanging.url, oidc_discovery_timeout=0.2)
    login = dict((route, h) for route, h, *_ in a.get_handlers(None))["/oauth_login"]

    class Handler(login):
        authenticator = a  # only what the mixin's get uses before it fails

        def __init__(self):
            pass

    with pytest.raises(web.HTTPError) as info:
        await Handler().get()
    assert info.value.status_code == 503
    assert "identity provider cannot be reached" in info.value.jupyterhub_message


class FakeUser:
    name = "alice"

    def __init__(self, auth_state):
        self.auth_state = auth_state

    async def get_auth_state(self):
        return self.auth_state


@pytest.fixture
def refresh_fakes(monkeypatch):
    """Stand-ins for the provider (token endpoint) and oauthenticator's own refresh_user."""
    calls = []

    async def token_endpoint(self, handler, params):
        calls.append(params["grant_type"])
        if params["refresh_token"] == "revoked":
            raise web.HTTPError(400)
        return {"access_token": "new", "expires_in": 300, "token_type": "Bearer"}

    async def to_model(self, token_info):
        return {"name": "alice", "auth_state": {"access_token": token_info["access_token"], **token_info}}

    async def base_refresh(self, user, handler=None, **kwargs):
        calls.append("oauthenticator")
        return True

    monkeypatch.setattr(oauth.OAuthenticator, "get_token_info", token_endpoint)
    monkeypatch.setattr(oauth.OAuthenticator, "_token_to_auth_model", to_model)
    monkeypatch.setattr(oauth.OAuthenticator, "refresh_user", base_refresh)
    monkeypatch.setattr(oauth, "utcnow", lambda: 1000.0)
    return calls


async def test_refresh_uses_refresh_token_inside_the_margin(refresh_fakes):
    a = checkin(access_token_refresh_margin=60)
    model = await a.refresh_user(FakeUser({"access_token": "old", "refresh_token": "r", "expires_at": 1050}))
    assert model["auth_state"]["access_token"] == "new"
    assert model["auth_state"]["refresh_token"] == "r"  # kept when the provider sends none
    assert model["auth_state"]["expires_at"] == 1300
    assert refresh_fakes == ["refresh_token"]


async def test_refresh_outside_the_margin_is_oauthenticators(refresh_fakes):
    a = checkin(access_token_refresh_margin=60)
    assert await a.refresh_user(FakeUser({"access_token": "old", "refresh_token": "r", "expires_at": 1100})) is True
    assert refresh_fakes == ["oauthenticator"]


def test_auth_state_is_stamped_when_the_provider_vouched_for_it(monkeypatch):
    monkeypatch.setattr(oauth, "utcnow", lambda: 1000.4)
    assert checkin().build_auth_state_dict({"access_token": "t"}, {})["verified_at"] == 1000


@pytest.mark.parametrize("verified_at, expires_at, calls", [
    (990, 5000, []),  # the spawn right after a login: the provider is not asked again
    (900, 5000, ["oauthenticator"]),  # older than auth_refresh_age: oauthenticator checks
    (1001, 5000, ["oauthenticator"]),  # a stamp from the future counts for nothing
    (990, 1050, ["refresh_token"]),  # expiring: refreshed, however recent the check
    (None, 5000, ["oauthenticator"]),  # auth_state from before the stamp
], ids=["just-verified", "verified-long-ago", "future-stamp", "expiring", "no-stamp"])
async def test_a_recent_check_is_not_repeated(refresh_fakes, verified_at, expires_at, calls):
    a = checkin(access_token_refresh_margin=60, auth_refresh_age=30)
    state = {"access_token": "old", "refresh_token": "r", "expires_at": expires_at}
    if verified_at is not None:
        state["verified_at"] = verified_at
    result = await a.refresh_user(FakeUser(state))
    assert refresh_fakes == calls
    assert result is True or result["auth_state"]["access_token"] == "new"


def refresh_failures(reason: str) -> float:
    """``science_gateway_token_refresh_failures_total{reason}`` of the hub's metrics (the default
    registry, which /hub/metrics serves)."""
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("science_gateway_token_refresh_failures_total", {"reason": reason}) or 0.0


async def test_failed_early_refresh_falls_back_to_oauthenticator(refresh_fakes):
    a = checkin(access_token_refresh_margin=60)
    refused = refresh_failures("refused")
    assert await a.refresh_user(FakeUser({"access_token": "old", "refresh_token": "revoked", "expires_at": 1050})) is True
    assert refresh_fakes == ["refresh_token", "oauthenticator"]
    assert refresh_failures("refused") == refused + 1


@pytest.mark.hub
def test_a_real_hub_answers_while_its_provider_hangs(hanging, tmp_path):
    """A real JupyterHub with Check-in pointed at a provider that never answers: its API answers
    while a login waits for discovery; the login gets the 503 page; the next one is answered at
    once from the remembered failure, without a new connection to the provider."""
    import requests

    from sgtest.hub import RunningHub

    config = {
        "JupyterHub": {"authenticator_class": "science-gateway-checkin"},
        "CheckinAuthenticator": {"oidc_issuer": hanging.url, "oidc_discovery_timeout": 10,
                                 "oidc_discovery_retry_interval": 600,
                                 "oauth_callback_url": "http://127.0.0.1:1/hub/oauth_callback"},
    }
    env = {"OAUTH_CLIENT_ID": "gateway-test", "OAUTH_CLIENT_SECRET": "not-a-secret"}
    with RunningHub(tmp_path, config=config, env=env) as hub:
        login = {}

        def sign_in():
            login["response"] = requests.get(f"{hub.url}/hub/oauth_login", timeout=60)

        waiting = threading.Thread(target=sign_in)
        waiting.start()
        from sgtest.hub import wait_for

        wait_for(lambda: hanging.connections, 30, what="the hub's discovery request")
        # the login is still waiting for the provider, and the hub answers other requests
        api = requests.get(f"{hub.url}/hub/api/", timeout=30)
        still_waiting = waiting.is_alive()
        waiting.join(60)
        assert api.status_code == 200 and "version" in api.json()
        assert still_waiting, "the login finished before the API call: the test proved nothing"
        first = login["response"]
        assert first.status_code == 503 and "identity provider cannot be reached" in first.text
        again = requests.get(f"{hub.url}/hub/oauth_login", timeout=30)
        assert again.status_code == 503 and len(hanging.connections) == 1


@pytest.fixture(params=["refused", "http-500"])
def provider_fault(request):
    """A provider whose token and userinfo endpoints refuse connections or answer HTTP 500."""
    from sgtest.fault_proxy import FaultProxy

    with FaultProxy("http://127.0.0.1:9") as proxy:
        proxy.down() if request.param == "refused" else proxy.http_error(500)
        yield request.param, proxy


async def test_a_provider_down_across_a_refresh_keeps_the_user_and_the_tokens(provider_fault, caplog):
    """Before: oauthenticator's userinfo call raised (the hub then treated the user as logged out
    on every request) or its refresh asked for a fresh login; now the tokens stay, with a warning."""
    kind, proxy = provider_fault
    a = checkin(token_url=f"{proxy.url}/token", userdata_url=f"{proxy.url}/userinfo", access_token_refresh_margin=60)
    state = {"access_token": "expired-access", "refresh_token": "the-refresh-token", "expires_at": 1,
             "token_response": {"access_token": "expired-access", "token_type": "Bearer"}}
    user = FakeUser(state)
    caplog.set_level("DEBUG")
    unreachable = refresh_failures("unreachable")
    assert await a.refresh_user(user) is True
    assert await a.refresh_user(user) is True
    assert refresh_failures("unreachable") == unreachable + 2  # counted each time, logged once
    assert user.auth_state["refresh_token"] == "the-refresh-token"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "did not answer" in r.getMessage()]
    assert len(warnings) == 1 and "stays logged in" in warnings[0], warnings  # once per outage
    assert ("ConnectionRefusedError" if kind == "refused" else "HTTP 500") in warnings[0]
    assert not [r for r in caplog.records if "the-refresh-token" in r.getMessage()]
    if kind == "http-500":
        assert proxy.counts["errors_answered"] >= 2  # the provider was asked each time
