"""The loopback OIDC provider (scripts/services/oidc) and hubs configured against it.

:func:`provider` reads the facts the service wrote (skip, or fail under CI, when it is not
running). :func:`site_config` loads the documented site config example for a style
(``docs/examples/checkin.yaml`` or ``cilogon.yaml``) and points it at the provider and the test
hub, with short refresh timings that match the provider's 30 s access tokens.
"""

from __future__ import annotations

import copy
import os
import secrets
import subprocess
import sys
from pathlib import Path

import requests
import yaml

from .services import missing, service_env

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "docs" / "examples"
AUTHENTICATOR = {"checkin": "CheckinAuthenticator", "cilogon": "CILogonAuthenticator"}

#: hub and token keeper timings for 30 s access tokens (see docs/authentication.md for the rule)
REFRESH_MARGIN = 15
AUTH_REFRESH_AGE = 5
KEEPER_ARGS = ["--TokenKeeper.interval=20", "--TokenKeeper.refresh_margin=8", "--TokenKeeper.min_interval=1"]


def provider() -> dict:
    """The running provider's facts (issuer, clients, users, passwords) from oidc.env."""
    env = service_env("oidc")
    try:
        requests.get(env["OIDC_DISCOVERY_URL"], timeout=5).raise_for_status()
    except requests.RequestException as e:
        missing("oidc", f"{env['OIDC_DISCOVERY_URL']} does not answer ({type(e).__name__})")
    return env


def password(env: dict, user: str) -> str:
    return env[f"OIDC_PASSWORD_{user.upper()}"]


def client(env: dict, style: str) -> tuple[str, str]:
    key = style.upper()
    return env[f"OIDC_{key}_CLIENT_ID"], env[f"OIDC_{key}_CLIENT_SECRET"]


def load_example(style: str) -> dict:
    return yaml.safe_load((EXAMPLES / f"{style}.yaml").read_text())


def site_config(style: str, env: dict, hub_url: str, admin_token: str) -> dict:
    """The documented example for ``style``, pointed at the provider and ``hub_url``."""
    config = copy.deepcopy(load_example(style))
    auth = config[AUTHENTICATOR[style]]
    auth["oidc_issuer"] = env["OIDC_ISSUER"]
    auth["oauth_callback_url"] = f"{hub_url}/hub/oauth_callback"
    auth["access_token_refresh_margin"] = REFRESH_MARGIN
    auth["auth_refresh_age"] = AUTH_REFRESH_AGE
    # a service token for the tests' own look at users, servers and auth_state
    hub = config["JupyterHub"]
    hub["services"] = [{"name": "oidc-test", "api_token": admin_token}]
    hub["load_roles"] = [
        *hub["load_roles"],
        {
            "name": "oidc-test",
            "scopes": ["admin:users", "admin:auth_state", "admin:server_state", "admin:servers"],
            "services": ["oidc-test"],
        },
    ]
    # Spawner.args replaces LocalSpawner's default (which allows root), so say it again here
    allow_root = ["--ServerApp.allow_root=True"] if os.geteuid() == 0 else []
    config["Spawner"] = {"args": [*allow_root, *KEEPER_ARGS]}
    return config


def hub_env(style: str, env: dict) -> dict:
    """The client credentials in the environment variables the docs tell admins to set."""
    client_id, client_secret = client(env, style)
    if style == "checkin":
        return {"OAUTH_CLIENT_ID": client_id, "OAUTH_CLIENT_SECRET": client_secret}
    return {"CILOGON_CLIENT_ID": client_id, "CILOGON_CLIENT_SECRET": client_secret}


def admin_token() -> str:
    return secrets.token_hex(32)


def introspect(env: dict, style: str, token: str) -> dict:
    """The provider's own verdict on ``token`` (RFC 7662 introspection, clockTolerance 0)."""
    client_id, client_secret = client(env, style)
    r = requests.post(
        env["OIDC_INTROSPECTION_URL"],
        data={"token": token, "client_id": client_id, "client_secret": client_secret},
        timeout=10,
    )
    r.raise_for_status()
    return r.json()


def runtime_dir(home: Path) -> Path:
    """The Jupyter runtime dir a server with ``HOME=home`` uses (the token keeper's default)."""
    out = subprocess.run(
        [sys.executable, "-c", "from jupyter_core.paths import jupyter_runtime_dir; print(jupyter_runtime_dir())"],
        env={"HOME": str(home), "PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip())


def provider_login(page, username: str, pw: str, shots=None):
    """On the provider's pages: sign in, then allow (``shots(name)`` takes screenshots)."""
    page.wait_for_selector("#username", timeout=30_000)
    if shots:
        shots("provider-login")
    page.fill("#username", username)
    page.fill("#password", pw)
    page.click("#sign-in")
    page.wait_for_selector("#allow", timeout=30_000)
    if shots:
        shots("provider-consent")
    page.click("#allow")


def browser_login(page, hub_url: str, username: str, pw: str, shots=None):
    """From the hub's login page through the provider and back to the hub."""
    page.goto(f"{hub_url}/hub/login")
    if shots:
        shots("hub-login")
    page.click("a:has-text('Sign in with')")
    provider_login(page, username, pw, shots)
