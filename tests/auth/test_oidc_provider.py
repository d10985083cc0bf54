"""The test provider script itself (scripts/services/oidc-provider/server.mjs), as a second instance.

A load test needs many users; ``OIDC_GENERATED_USERS=PREFIX:COUNT`` gives them to an instance of
its own (the shared provider keeps only its named users). Driven without a browser
(``sgtest.oidc.form_login``): the authorization code flow up to the token and userinfo endpoints.
"""

from __future__ import annotations

import subprocess
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
import requests

from sgtest import oidc
from sgtest.hub import free_port

pytestmark = [pytest.mark.oidc]

REDIRECT = "http://127.0.0.1:9/hub/oauth_callback"  # never fetched: the walk stops before it


@pytest.fixture(scope="module")
def provider():
    with oidc.ProviderInstance(free_port(), env={"OIDC_GENERATED_USERS": "sgload:12"}) as instance:
        yield instance


def authorize_url(provider, client_id: str) -> str:
    query = {"client_id": client_id, "redirect_uri": REDIRECT, "response_type": "code", "state": "s1",
             "scope": "openid profile eduperson_entitlement offline_access"}
    return f"{provider.issuer}/auth?{urlencode(query)}"


def login(provider, user: str, pw: str) -> dict:
    """The whole code flow as ``user``: the tokens the client gets and the userinfo they open."""
    client_id, client_secret = oidc.client(provider.env, "checkin")
    r = oidc.form_login(requests.Session(), authorize_url(provider, client_id), user, pw,
                        stop=lambda url: url.startswith(REDIRECT))
    query = parse_qs(urlparse(r.headers["Location"]).query)
    assert query["state"] == ["s1"]
    tokens = requests.post(f"{provider.issuer}/token", timeout=10, data={
        "grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": REDIRECT,
        "client_id": client_id, "client_secret": client_secret}).json()
    info = requests.get(f"{provider.issuer}/me", timeout=10,
                        headers={"Authorization": f"Bearer {tokens['access_token']}"}).json()
    return {"tokens": tokens, "userinfo": info}


def test_generated_users_are_listed_with_passwords(provider):
    users = provider.env["OIDC_USERS"].split(",")
    generated = [f"sgload{i:02d}" for i in range(1, 13)]
    assert users == ["alice", "bob", "carol", "mallory", *generated]
    passwords = {oidc.password(provider.env, u) for u in users}
    assert len(passwords) == len(users) and all(len(p) == 16 for p in passwords)


def test_a_generated_user_logs_in_as_a_vo_member(provider):
    result = login(provider, "sgload07", oidc.password(provider.env, "sgload07"))
    assert result["tokens"]["refresh_token"]
    info = result["userinfo"]
    assert info["sub"] == "sgload07" and info["preferred_username"] == "sgload07"
    assert info["eduperson_entitlement"] == [
        f"urn:mace:egi.eu:group:vo.astro.example:role=member#{provider.env['OIDC_CHECKIN_AUTHORITY']}"]


def test_named_users_are_still_there(provider):
    assert login(provider, "alice", oidc.password(provider.env, "alice"))["userinfo"]["sub"] == "alice"


@pytest.mark.parametrize("user, pw", [("sgload03", "wrong-password"), ("sgload13", "x"), ("__proto__", "x")],
                         ids=["wrong-password", "beyond-count", "prototype-name"])
def test_a_wrong_login_is_refused_on_the_login_page(provider, user, pw):
    client_id, _secret = oidc.client(provider.env, "checkin")
    with pytest.raises(oidc.LoginError, match="refused"):
        oidc.form_login(requests.Session(), authorize_url(provider, client_id), user, pw)


@pytest.mark.parametrize("spec", ["sgload", "sgload:0", "sgload:1001", "Bad:3", "alic:x", "ali:ce"])
def test_a_bad_pattern_is_a_clear_error(provider, spec):
    argv, env = provider.command("env", str(provider.dir / "state"))
    env["OIDC_GENERATED_USERS"] = spec
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "OIDC_GENERATED_USERS must be PREFIX:COUNT" in result.stderr
    assert result.stdout == ""


def test_the_rucio_client_gets_jwt_access_tokens_that_userinfo_takes_and_forgeries_it_does_not(provider):
    """gateway-rucio: JWT access tokens with Rucio's audience and the granted scopes (what a Rucio
    server checks), usable at userinfo like Check-in's; a token with a changed claim is refused. The
    other clients keep opaque tokens."""
    import base64
    import json
    import time

    pw = oidc.password(provider.env, "alice")
    tokens = oidc.code_flow_tokens(provider.env, "rucio", "alice", pw)
    claims = oidc.jwt_claims(tokens["access_token"])
    assert claims["aud"] == provider.env["OIDC_RUCIO_AUDIENCE"] == "rucio"
    assert claims["iss"] == provider.issuer and claims["sub"] == "alice"
    assert claims["client_id"] == provider.env["OIDC_RUCIO_CLIENT_ID"]
    assert {"openid", "profile", "eduperson_entitlement", "voperson_id"} <= set(claims["scope"].split())
    assert "offline_access" not in claims["scope"].split() and tokens["refresh_token"]

    def userinfo(token):
        return requests.get(f"{provider.issuer}/me", timeout=10, headers={"Authorization": f"Bearer {token}"})

    info = userinfo(tokens["access_token"])
    assert info.status_code == 200, info.text
    assert info.json()["sub"] == "alice" and info.json()["voperson_id"] == "alice.astro@egi.eu"
    assert info.json()["eduperson_entitlement"]
    header, _payload, signature = tokens["access_token"].split(".")
    for changed in ({"sub": "bob"}, {"exp": int(time.time()) + 86400}, {"aud": "other"}):
        payload = base64.urlsafe_b64encode(json.dumps({**claims, **changed}).encode()).rstrip(b"=").decode()
        refused = userinfo(f"{header}.{payload}.{signature}")
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_token", changed
    # a refresh gives another JWT for Rucio; the Check-in style client still gets an opaque token
    again = oidc.refresh_tokens(provider.env, "rucio", tokens["refresh_token"])
    assert oidc.jwt_claims(again["access_token"])["aud"] == "rucio"
    assert again["access_token"] != tokens["access_token"]
    opaque = login(provider, "alice", pw)["tokens"]["access_token"]
    assert opaque.count(".") == 0
