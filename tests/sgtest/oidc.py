"""The loopback OIDC provider (scripts/services/oidc) and hubs configured against it.

:func:`provider` reads the facts the service wrote (skip, or fail under CI, when it is not
running). :func:`site_config` loads the documented site config example for a style
(``docs/examples/checkin.yaml`` or ``cilogon.yaml``) and points it at the provider and the test
hub, with short refresh timings that match the provider's 30 s access tokens.

Without a browser: :func:`form_login` walks the provider's login and consent pages with a
``requests.Session`` (what a person's browser does, redirect by redirect), and
:class:`ProviderInstance` runs a second provider from the same script on a port of its own, e.g.
with many generated users for a load test, without touching the shared service.
"""

from __future__ import annotations

import copy
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urljoin

import requests
import yaml

from .hub import stop_group, wait_serving
from .services import SERVICES_DIR, missing, parse_env, service_env

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


# --- without a browser ---------------------------------------------------------------------------

#: the provider's login and consent forms (scripts/services/oidc-provider/server.mjs)
LOGIN_FORM = re.compile(r'action="(/interaction/[\w-]+/login)"')
CONSENT_FORM = re.compile(r'action="(/interaction/[\w-]+/confirm)"')


class LoginError(RuntimeError):
    """A password login through the provider's pages did not get where it should."""


def _follow(http: requests.Session, response: requests.Response, stop, timeout: float) -> requests.Response:
    """Follow ``response``'s redirects one by one until one points where ``stop(url)`` is true
    (that response is returned, its target not fetched) or a page answers."""
    for _ in range(20):
        if not response.is_redirect:
            return response
        target = urljoin(response.url, response.headers["Location"])
        if stop is not None and stop(target):
            return response
        response = http.get(target, allow_redirects=False, timeout=timeout)
    raise LoginError(f"more than 20 redirects from {response.url[:80]}")


def form_login(http: requests.Session, url: str, username: str, pw: str, *, stop=None,
               timeout: float = 60) -> requests.Response:
    """From ``url`` (a hub's ``/hub/oauth_login``, or the provider's ``/auth?...``) through the
    provider's login page and, when it asks, its consent page, as a browser would.

    ``stop(url)`` ends the walk before a redirect to ``url`` is followed (the response that
    points there is returned); without it the walk ends on the first page that is not a redirect.
    Raises :class:`LoginError` (with the page's status and title) when a form is not where it
    should be, e.g. a refused password.
    """
    page = _follow(http, http.get(url, allow_redirects=False, timeout=timeout), None, timeout)
    form = LOGIN_FORM.search(page.text)
    if not form:
        raise LoginError(f"no login form at {page.url[:80]} ({page.status_code} {_title(page.text)})")
    response = http.post(urljoin(page.url, form.group(1)), data={"username": username, "password": pw},
                         allow_redirects=False, timeout=timeout)
    if not response.is_redirect:
        raise LoginError(f"login of {username!r} refused ({response.status_code} {_title(response.text)})")
    response = _follow(http, response, stop, timeout)
    consent = None if response.is_redirect else CONSENT_FORM.search(response.text)
    if consent:
        response = http.post(urljoin(response.url, consent.group(1)), allow_redirects=False, timeout=timeout)
        response = _follow(http, response, stop, timeout)
    return response


def _title(html: str) -> str:
    match = re.search(r"<title>([^<]{0,80})", html)
    return match.group(1) if match else ""


def hub_login(http: requests.Session, hub_url: str, issuer: str, username: str, pw: str,
              timeout: float = 60) -> requests.Response:
    """Log in to the hub at ``hub_url`` through the provider at ``issuer``, stopping once the
    hub's OAuth callback has answered (its session cookie is in ``http``; the redirect it gave,
    e.g. to the spawn page, is not followed). Raises :class:`LoginError` if the hub refused."""
    callback = f"{hub_url}/hub/oauth_callback"

    def left_provider_and_callback(url: str) -> bool:
        return not (url.startswith(issuer) or url.startswith(callback))

    response = form_login(http, f"{hub_url}/hub/oauth_login", username, pw, stop=left_provider_and_callback,
                          timeout=timeout)
    if not (response.url.startswith(callback) and response.is_redirect):
        raise LoginError(f"the hub did not log {username!r} in ({response.status_code} {_title(response.text)})")
    return response


class ProviderInstance:
    """Another provider from scripts/services/oidc-provider/server.mjs, on ``port``, with a state
    dir of its own (its own secrets and signing key) and ``env`` (e.g. ``OIDC_GENERATED_USERS``).

    It uses the npm install of the shared service (``$SG_SERVICES_DIR/oidc/app/node_modules``,
    or ``node_modules``) and the repository's own script; the shared provider is not touched. :attr:`env` holds the
    same facts as the service's oidc.env.
    """

    SCRIPT = REPO / "scripts" / "services" / "oidc-provider" / "server.mjs"

    def __init__(self, port: int, env: dict | None = None, ttl: int = 3600, node_modules: Path | None = None):
        self.port = port
        self.node_modules = Path(node_modules or SERVICES_DIR / "oidc" / "app" / "node_modules")
        self.issuer = f"http://127.0.0.1:{port}"
        self.extra_env = {"OIDC_HOST": "127.0.0.1", "OIDC_PORT": str(port), "OIDC_ACCESS_TOKEN_TTL": str(ttl),
                          **(env or {})}
        self.dir: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.env: dict[str, str] = {}
        self.log_path: Path | None = None

    def command(self, *args) -> tuple[list[str], dict]:
        """(argv, environment) of ``node server.mjs ARGS...`` for this instance."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **self.extra_env}
        return [shutil.which("node") or "/usr/bin/node", str(self.dir / "app" / "server.mjs"), *args], env

    def start(self, timeout: float = 30) -> "ProviderInstance":
        modules = self.node_modules
        if not (modules / "oidc-provider").is_dir():
            missing("oidc", f"no npm install at {modules} (run scripts/services/oidc install)")
        self.dir = Path(tempfile.mkdtemp(prefix=f"sg-oidc-{self.port}-", dir="/var/tmp"))
        (self.dir / "app").mkdir()
        shutil.copy(self.SCRIPT, self.dir / "app" / "server.mjs")
        (self.dir / "app" / "node_modules").symlink_to(modules)
        state = str(self.dir / "state")
        argv, env = self.command("init", state)
        subprocess.run(argv, env=env, check=True, timeout=30, capture_output=True)
        argv, env = self.command("env", state)
        self.env = parse_env(subprocess.run(argv, env=env, check=True, timeout=30, capture_output=True,
                                            text=True).stdout)
        argv, env = self.command("serve", state)
        self.log_path = self.dir / "provider.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

        try:
            wait_serving(self.proc, self.env["OIDC_DISCOVERY_URL"], timeout, "the provider",
                         lambda: self.log_path.read_text(errors="replace")[-2000:])
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        stop_group(self.proc, 10)
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# --- tokens straight from the provider (no hub) ----------------------------------------------------

#: the scopes the documented Check-in config asks for (docs/examples/checkin.yaml, CheckinAuthenticator)
CHECKIN_SCOPES = "openid profile email eduperson_entitlement voperson_id offline_access"


def code_flow_tokens(env: dict, style: str, username: str, pw: str, scope: str = CHECKIN_SCOPES,
                     timeout: float = 60) -> dict:
    """The token response of an authorization code flow (with PKCE) of ``style``'s client for
    ``username``, walked through the provider's login and consent pages as a browser would: what
    a hub gets at a login, without a hub (e.g. ``style="rucio"`` for a Rucio JWT access token)."""
    import base64
    import hashlib
    from urllib.parse import parse_qs, urlencode, urlparse

    client_id, client_secret = client(env, style)
    redirect_uri = "http://127.0.0.1/hub/oauth_callback"
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urlencode({
        "client_id": client_id, "response_type": "code", "scope": scope, "redirect_uri": redirect_uri,
        "state": secrets.token_urlsafe(12), "code_challenge": challenge, "code_challenge_method": "S256",
        "prompt": "consent",
    })
    with requests.Session() as http:
        response = form_login(http, f"{env['OIDC_ISSUER']}/auth?{query}", username, pw,
                              stop=lambda url: url.startswith(redirect_uri), timeout=timeout)
        if not response.is_redirect:
            raise LoginError(f"no redirect to the client after the login of {username!r} ({response.status_code})")
        code = parse_qs(urlparse(response.headers["Location"]).query).get("code")
        if not code:
            raise LoginError(f"the provider sent {username!r} back without a code")
        token = http.post(
            f"{env['OIDC_ISSUER']}/token",
            data={"grant_type": "authorization_code", "code": code[0], "redirect_uri": redirect_uri,
                  "client_id": client_id, "client_secret": client_secret, "code_verifier": verifier},
            timeout=timeout,
        )
    token.raise_for_status()
    return token.json()


def refresh_tokens(env: dict, style: str, refresh_token: str, timeout: float = 30) -> dict:
    """The token response of a refresh token grant of ``style``'s client."""
    client_id, client_secret = client(env, style)
    r = requests.post(
        f"{env['OIDC_ISSUER']}/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token,
              "client_id": client_id, "client_secret": client_secret},
        timeout=timeout,
    )
    r.raise_for_status()
    return r.json()


def jwt_claims(token: str) -> dict:
    """The payload of a JWT, unverified (to look at what a token says, never to trust it)."""
    import base64
    import json

    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
