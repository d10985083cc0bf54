"""The user's own identity on the data: real Rucio trusting the real OIDC provider's tokens.

Two people log in to a real JupyterHub through the provider (the documented Check-in config, with
the provider's ``gateway-rucio`` client, whose access tokens are JWTs with Rucio's audience); each
gets a real single-user server whose catalogue is the Rucio backend with ``auth_type = "oidc"``:
the token keeper's ``$BEARER_TOKEN_FILE`` is the only credential, no Rucio password anywhere.
Rucio maps each token to that person's own account (``alice_astro``, ``bob_admin``: OIDC
identities ``SUB=<sub>, ISS=<issuer>`` made by scripts/rucio/fixtures.py), so each stage-in rule is
the user's own. One user's token cannot cancel the other's rules nor read the other's quota
(Rucio refuses, asked with the token directly), a forged token is refused, a token that expired
is replaced by the keeper before anyone notices, and an expired token in the backend is a 401 that
says to log in again.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest
import requests

from science_gateway.core.catalog import NotAuthenticated
from science_gateway.jupyter_ext.catalog.rucio import RucioCatalog, bearer_token_client
from sgtest import oidc
from sgtest import rucio_transfers as rt
from sgtest.hub import HubSession, RunningHub, wait_for
from sgtest.notebooks import api_token
from sgtest.rucio_transfers import rucio  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.oidc, pytest.mark.rucio, pytest.mark.hub]

#: provider user -> hub user name (docs/examples/checkin.yaml: from voperson_id)
HUB_NAMES = {"alice": "alice.astro-egi.eu", "bob": "bob.admin-egi.eu"}


def rucio_accounts(env: dict) -> dict[str, str]:
    """provider user -> the Rucio account of their OIDC identity (from rucio.env)."""
    return dict(pair.split(":", 1) for pair in env["RUCIO_OIDC_ACCOUNTS"].split(","))


class Person:
    """A provider user logged in to the hub, with a running server and an API token for it."""

    def __init__(self, stack, user: str):
        self.stack, self.user, self.name = stack, user, HUB_NAMES[user]
        self.session = HubSession(stack.hub)
        oidc.hub_login(self.session.http, stack.hub.url, stack.provider["OIDC_ISSUER"], user,
                       oidc.password(stack.provider, user))
        self.session.start_server(self.name, timeout=120)
        self.token = api_token(self.session, self.name, note="rucio oidc test")
        self.token_file = oidc.runtime_dir(stack.hub.state_dir / "home" / self.name) / "bearer_token"
        wait_for(lambda: self.token_file.exists() and self.token_file.stat().st_size, 60,
                 what=f"the token keeper's {self.token_file}")

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(method, f"{self.stack.hub.url}/user/{self.name}/gateway/api{path}", timeout=60,
                                headers={"Authorization": f"token {self.token}"}, **kwargs)

    def access_token(self) -> str:
        return self.token_file.read_text().strip()


class Stack:
    def __init__(self, provider, rucio_env, hub):
        self.provider, self.rucio, self.hub = provider, rucio_env, hub
        self.admin = rt.client(rucio_env)
        self.people: dict[str, Person] = {}
        self.rules: list[str] = []

    @staticmethod
    def admin_now():
        """Now as rucio-clients gives dates (naive UTC)."""
        import datetime

        return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)

    def person(self, user: str) -> Person:
        if user not in self.people:
            self.people[user] = Person(self, user)
        return self.people[user]


@pytest.fixture(scope="module")
def stack(rucio, tmp_path_factory):  # noqa: F811 (the rucio fixture)
    provider = oidc.provider()
    if "RUCIO_OIDC_ISSUER" not in rucio or "OIDC_RUCIO_CLIENT_ID" not in provider:
        from sgtest.services import missing

        missing("rucio", "Rucio or the OIDC provider runs without the OIDC setup (restart both: scripts/services/rucio start, scripts/services/oidc start)")
    assert rucio["RUCIO_OIDC_ISSUER"] == provider["OIDC_ISSUER"]
    state = tmp_path_factory.mktemp("hub-rucio-oidc")
    token = oidc.admin_token()
    client_id, client_secret = oidc.client(provider, "rucio")
    hub = RunningHub(state, env={"OAUTH_CLIENT_ID": client_id, "OAUTH_CLIENT_SECRET": client_secret})
    config = oidc.site_config("checkin", provider, hub.url, token)
    # the users' servers: the Rucio backend with the token keeper's token, and nothing else
    args, _password_env = rt.server_settings(rucio, auth_type="oidc")
    config["Spawner"]["args"] = [*config["Spawner"]["args"], *args]
    # a loaded machine: a server's first import can take longer than the default 30 s
    config["Spawner"].update(http_timeout=120, start_timeout=180)
    hub.extra_config = config
    with hub:
        running = Stack(provider, rucio, hub)
        try:
            yield running
        finally:
            for rule_id in running.rules:  # expire what the tests staged, whatever they reached
                try:
                    running.admin.update_replication_rule(rule_id, {"lifetime": 0})
                except Exception:  # noqa: BLE001 - cancelled by the test already
                    pass


def token_client(rucio_env: dict, token: str, tmp_path, account: str):
    """A rucio-clients Client of ``account`` that sends ``token`` (found through $BEARER_TOKEN_FILE,
    as in a notebook; the account only names the client's token cache, Rucio maps the token)."""
    path = tmp_path / f"bt-{time.monotonic_ns()}"
    path.write_text(token)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BEARER_TOKEN_FILE", str(path))
        return bearer_token_client()(rucio_host=rucio_env["RUCIO_URL"], auth_host=rucio_env["RUCIO_AUTH_URL"],
                                     auth_type="oidc", account=account, timeout=30)


def stage(stack: Stack, person: Person) -> dict:
    did = rt.make_dataset(stack.admin, stack.rucio, n_files=2)
    r = person.api("POST", "/requests", json={"did": did})
    assert r.status_code == 201, r.text
    request = r.json()
    stack.rules.append(request["id"])
    return request


def test_each_user_stages_under_their_own_rucio_account(stack):
    accounts = rucio_accounts(stack.rucio)
    for user in ("alice", "bob"):
        person = stack.person(user)
        claims = oidc.jwt_claims(person.access_token())
        assert claims["aud"] == stack.provider["OIDC_RUCIO_AUDIENCE"] and claims["sub"] == user
        request = stage(stack, person)
        # Rucio, asked as root, says whose rule it is: the user's own account
        rule = stack.admin.get_replication_rule(request["id"])
        assert rule["account"] == accounts[user], (user, rule["account"])
        assert rule["rse_expression"] == stack.rucio["RUCIO_DISK_RSE"]
        listed = person.api("GET", "/requests")
        assert listed.status_code == 200, listed.text
        assert request["id"] in {r["id"] for r in listed.json()["requests"]}
    alice, bob = stack.people["alice"], stack.people["bob"]
    # each server sees its own requests only
    alice_ids = {r["id"] for r in alice.api("GET", "/requests").json()["requests"]}
    bob_ids = {r["id"] for r in bob.api("GET", "/requests").json()["requests"]}
    assert alice_ids and bob_ids and not alice_ids & bob_ids
    for rule_id in bob_ids:
        assert alice.api("GET", f"/requests/{rule_id}").status_code == 404
        assert alice.api("DELETE", f"/requests/{rule_id}").status_code == 404


def test_one_users_token_cannot_cancel_or_inspect_the_others(stack, tmp_path):
    from rucio.common.exception import AccessDenied, CannotAuthenticate

    accounts = rucio_accounts(stack.rucio)
    alice, bob = stack.person("alice"), stack.person("bob")
    bobs = [r for r in stack.rules if stack.admin.get_replication_rule(r)["account"] == accounts["bob"]]
    bobs_rule = bobs[0] if bobs else stage(stack, bob)["id"]
    with_alices = token_client(stack.rucio, alice.access_token(), tmp_path, accounts["alice"])
    assert with_alices.whoami()["account"] == accounts["alice"]
    with pytest.raises(AccessDenied):
        with_alices.update_replication_rule(bobs_rule, {"lifetime": 0})
    with pytest.raises(AccessDenied):
        with_alices.delete_replication_rule(bobs_rule, purge_replicas=False)
    with pytest.raises(AccessDenied):
        list(with_alices.get_local_account_usage(accounts["bob"], stack.rucio["RUCIO_DISK_RSE"]))
    # her own usage she may read; bob's rule is untouched
    assert list(with_alices.get_local_account_usage(accounts["alice"], stack.rucio["RUCIO_DISK_RSE"]))
    rule = stack.admin.get_replication_rule(bobs_rule)
    assert rule["account"] == accounts["bob"]
    assert rule["expires_at"] is None or rule["expires_at"] > stack.admin_now(), rule["expires_at"]
    # a token that claims to be bob's, made from alice's by changing its subject: refused
    header, payload, signature = alice.access_token().split(".")
    claims = oidc.jwt_claims(alice.access_token())
    forged_payload = base64.urlsafe_b64encode(json.dumps({**claims, "sub": "bob"}).encode()).rstrip(b"=").decode()
    forged = token_client(stack.rucio, f"{header}.{forged_payload}.{signature}", tmp_path, accounts["bob"])
    with pytest.raises(CannotAuthenticate):
        forged.whoami()
    # bob's own token may cancel his rule (what the gateway's cancel does)
    r = bob.api("DELETE", f"/requests/{bobs_rule}")
    assert r.status_code in (200, 204), r.text
    assert stack.admin.get_replication_rule(bobs_rule)["expires_at"] is not None


async def test_an_expired_token_is_replaced_before_the_user_notices_and_a_refused_one_says_log_in(stack, tmp_path,
                                                                                                 monkeypatch):
    from rucio.common.exception import CannotAuthenticate

    alice = stack.person("alice")
    first = alice.access_token()
    expires = oidc.jwt_claims(first)["exp"]
    ttl = int(stack.provider["OIDC_ACCESS_TOKEN_TTL"])
    assert expires - oidc.jwt_claims(first)["iat"] <= ttl
    await asyncio.sleep(max(0.0, expires - time.time()) + 1.5)
    # the first token has expired; the user's server goes on as before
    staged = await asyncio.to_thread(stage, stack, alice)
    listed = await asyncio.to_thread(alice.api, "GET", "/requests")
    assert listed.status_code == 200 and staged["id"] in {r["id"] for r in listed.json()["requests"]}
    current = alice.access_token()
    assert current != first and oidc.jwt_claims(current)["exp"] > time.time()
    # Rucio itself refuses the expired token: without the keeper the user would have been stuck
    with pytest.raises(CannotAuthenticate):
        await asyncio.to_thread(lambda: token_client(stack.rucio, first, tmp_path, "alice_astro").whoami())
    # the backend with that expired token: a 401 saying to log in again, not a 500
    token_file = tmp_path / "expired_bearer_token"
    token_file.write_text(first)
    monkeypatch.setenv("BEARER_TOKEN_FILE", str(token_file))  # what the backend's client sets
    catalog = RucioCatalog(**rt.backend_config(stack.rucio, auth_type="oidc", token_file=str(token_file), account="",
                                               password=""))
    try:
        with pytest.raises(NotAuthenticated) as e:
            await catalog.status()
        assert e.value.status == 401 and "log in to the gateway again" in str(e.value)
        assert first not in str(e.value)
        # the same backend with the current token works, as the user's own account
        token_file.write_text(current)
        requests_now = await catalog.status()
        assert staged["id"] in {r.id for r in requests_now}
        assert catalog.account == rucio_accounts(stack.rucio)["alice"]
    finally:
        await catalog.close()
