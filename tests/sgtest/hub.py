"""A real JupyterHub process started from the reference ``jupyterhub_config.py``.

:class:`RunningHub` starts ``jupyterhub`` on free loopback ports with the embedded default plus
extra site config (the same ``SCIENCE_GATEWAY_CONFIG`` mechanism an admin uses), and stops it by
its process group. :class:`HubSession` is a person with a browser-like cookie jar: it logs in
through the real login form and walks the same redirects a browser does.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
import yaml

REPO = Path(__file__).resolve().parents[2]
REFERENCE_CONFIG = REPO / "jupyterhub_config.py"

#: a non-admin user with no groups, added to the embedded default's demo users for tests
OTHER_USER = ("bob", "bob-password")


#: ports free_port handed out in this process: the kernel can give a closed port again at once,
#: and a hub once got its proxy's API port as its own (CI: "Failed to bind hub")
_GIVEN: set[int] = set()


def free_port() -> int:
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _GIVEN:
            break
    _GIVEN.add(port)
    return port


def stop_group(proc: subprocess.Popen | None, timeout: float = 30) -> None:
    """SIGTERM the process group ``proc`` leads (``start_new_session=True``), SIGKILL after ``timeout``."""
    if proc and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)


def wait_serving(proc: subprocess.Popen, url: str, timeout: float, what: str, log_tail,
                 interval: float = 0.25) -> None:
    """Wait (checking every ``interval`` s) until ``url`` answers 200; RuntimeError with
    ``log_tail()`` if ``proc`` exits first."""

    def serving():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log_tail()}")
        return requests.get(url, timeout=2).status_code == 200

    wait_for(serving, timeout, interval=interval, what=f"{what} at {url}")


class _Waiting:
    """The deadline and last error of one wait: what wait_for and async_wait_for share."""

    #: errors of a service that is not up yet: keep polling, report the last one on timeout
    TRANSIENT = (requests.RequestException, OSError)

    def __init__(self, timeout: float, what: str):
        self.timeout, self.what = timeout, what
        self.deadline = time.monotonic() + timeout
        self.last_error: Exception | None = None

    def failed(self, error: Exception) -> None:
        self.last_error = error

    def raise_if_late(self) -> None:
        if time.monotonic() >= self.deadline:
            raise TimeoutError(f"timed out after {self.timeout}s waiting for {self.what} (last error: {self.last_error})")


def wait_for(predicate, timeout: float, interval: float = 0.25, what: str = "condition"):
    """Call ``predicate`` (at least once) until it returns a truthy value; raise TimeoutError with
    ``what`` and the last transient error (requests, OSError) after ``timeout`` seconds."""
    waiting = _Waiting(timeout, what)
    while True:
        try:
            value = predicate()
        except _Waiting.TRANSIENT as e:
            value = waiting.failed(e)
        if value:
            return value
        waiting.raise_if_late()
        time.sleep(interval)


async def async_wait_for(predicate, timeout: float, interval: float = 0.25, what: str = "condition"):
    """:func:`wait_for` on the running event loop: ``predicate`` may be a coroutine function."""
    waiting = _Waiting(timeout, what)
    while True:
        try:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
        except _Waiting.TRANSIENT as e:
            value = waiting.failed(e)
        if value:
            return value
        waiting.raise_if_late()
        await asyncio.sleep(interval)


#: a stock JupyterHub's config file: nothing of the gateway's, only the traits in the JSON beside it
STOCK_CONFIG = """# written by sgtest.hub.RunningHub(stock=True): plain traits, no Science Gateway config
import json
from traitlets.config import Config

c = get_config()  # noqa: F821
c.merge(Config(json.loads(open({path!r}).read())))
"""


class RunningHub:
    """``jupyterhub -f jupyterhub_config.py`` in a state dir of its own, on free ports.

    ``stock=True``: a stock JupyterHub instead, whose config file holds only ``config`` (and the
    ports, database and cookie secret in the state dir), not the reference config: the peer in a
    benchmark. It still runs from this venv, where the package is installed.
    """

    def __init__(self, state_dir: Path, config: dict | None = None, env: dict | None = None, stock: bool = False):
        self.stock = stock
        self.state_dir = Path(state_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_config = config or {}
        self.extra_env = env or {}
        self.proc: subprocess.Popen | None = None
        self.log_path = self.state_dir / "jupyterhub.log"
        #: the environment the hub was started with (its secrets, e.g. JUPYTERHUB_CRYPT_KEY)
        self.env: dict[str, str] = {}

    def _write_config(self) -> Path:
        base = {
            "JupyterHub": {"hub_port": free_port()},
            "ConfigurableHTTPProxy": {"api_url": f"http://127.0.0.1:{free_port()}"},
        }
        if os.geteuid() == 0:
            # CI and this machine run tests as root; the local spawner refuses root unless told
            base["LocalSpawner"] = {"allow_root": True}
        if self.stock:
            base["JupyterHub"].update(
                bind_url=self.url, hub_ip="127.0.0.1", db_url=f"sqlite:///{self.state_dir / 'jupyterhub.sqlite'}",
                cookie_secret_file=str(self.state_dir / "jupyterhub_cookie_secret"),
            )
        for cls, traits in self.extra_config.items():
            base.setdefault(cls, {}).update(traits)
        path = self.state_dir / "test-site-config.yaml"
        path.write_text(yaml.safe_dump(base))
        if self.stock:
            traits = self.state_dir / "stock-config.json"
            traits.write_text(json.dumps(base))
            path = self.state_dir / "stock_jupyterhub_config.py"
            path.write_text(STOCK_CONFIG.format(path=str(traits)))
        return path

    def start(self, timeout: float = 60, interval: float = 0.25):
        """Start the hub and wait (checking every ``interval`` s) until ``/hub/health`` answers."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        gateway = {} if self.stock else {
            "SCIENCE_GATEWAY_STATE_DIR": str(self.state_dir),
            "SCIENCE_GATEWAY_BIND_URL": self.url,
            "SCIENCE_GATEWAY_CONFIG": str(config),
        }
        env = {
            **os.environ,
            **gateway,
            "JUPYTERHUB_CRYPT_KEY": os.environ.get("JUPYTERHUB_CRYPT_KEY", os.urandom(32).hex()),
            **self.extra_env,  # may name more site config files (SCIENCE_GATEWAY_CONFIG)
        }
        # The hub's own Python's bin holds jupyterhub and jupyterhub-singleuser.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        self.env = env
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "jupyterhub"), "-f", str(config if self.stock else REFERENCE_CONFIG)],
            cwd=self.state_dir,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        try:
            wait_serving(self.proc, f"{self.url}/hub/health", timeout, "jupyterhub", self.log_tail, interval=interval)
        except Exception:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 30):
        stop_group(self.proc, timeout)
        if getattr(self, "_log", None):
            self._log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def server_environ(pid: int) -> dict[str, str]:
    """The environment of a running local process (a user's server: its pid is in the hub's
    server model, ``servers[""]["state"]["pid"]``), e.g. the API token the hub gave it."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(e.decode().split("=", 1) for e in environ if b"=" in e)
def restartable_hub(state_dir: Path, config: dict, env: dict | None = None):
    """A factory of :class:`RunningHub` objects that share one state dir and fixed ports: each
    call gives the same hub again, to stop and start (what a hub restart is)."""
    hub_port, public_port = free_port(), free_port()
    config = {**config, "JupyterHub": {**config.get("JupyterHub", {}), "hub_port": hub_port}}

    def make() -> RunningHub:
        hub = RunningHub(state_dir, config=config, env=env)
        hub.port, hub.url = public_port, f"http://127.0.0.1:{public_port}"
        return hub

    return make


def named_servers(users, per_user: int) -> list[tuple[str, str]]:
    """``per_user`` named servers (``s0``, ``s1``, ...) for each of ``users``: (user, server) pairs."""
    return [(name, f"s{i}") for name in users for i in range(per_user)]


class ManyServers:
    """Many named servers of a few users on one hub (JupyterHub.allow_named_servers): started
    at once, checked, stopped at once, as at the start and end of a workshop."""

    def __init__(self, hub: RunningHub, sessions: dict, servers: list[tuple[str, str]]):
        self.hub, self.sessions, self.servers = hub, sessions, servers

    def start_all(self, options: dict | None = None) -> None:
        for name, server in self.servers:
            r = self.sessions[name].api(f"/users/{name}/servers/{server}", method="POST", json=options or {})
            assert r.status_code in (201, 202), r.text

    def all_ready(self) -> bool:
        models = {name: session.server_models(name) for name, session in self.sessions.items()}
        return all(models[name].get(server, {}).get("ready") for name, server in self.servers)

    def none_left(self) -> bool:
        return not any(session.server_models(name) for name, session in self.sessions.items())

    def check_each_answers_as_its_user(self) -> None:
        """Each server answers ``/api/me`` through the proxy as its own user (a token of the user)."""
        from sgtest.notebooks import api_token

        tokens = {name: api_token(session, name, note="many servers") for name, session in self.sessions.items()}
        for name, server in self.servers:
            r = requests.get(f"{self.hub.url}/user/{name}/{server}/api/me", timeout=30,
                             headers={"Authorization": f"token {tokens[name]}"})
            assert r.status_code == 200 and r.json()["identity"]["username"] == name, (name, server, r.text[:200])

    def stop_all(self) -> None:
        for name, server in self.servers:
            r = self.sessions[name].api(f"/users/{name}/servers/{server}", method="DELETE")
            assert r.status_code in (202, 204), r.text


class HubSession:
    """A person with a cookie jar, using the hub as a browser would (form login, redirects)."""

    def __init__(self, hub: RunningHub):
        self.hub = hub
        self.http = requests.Session()

    def login(self, username: str, password: str) -> requests.Response:
        page = self.http.get(f"{self.hub.url}/hub/login", timeout=10)
        page.raise_for_status()
        match = re.search(r'name="_xsrf"\s+value="([^"]+)"', page.text)
        data = {"username": username, "password": password}
        if match:
            data["_xsrf"] = match.group(1)
        return self.http.post(f"{self.hub.url}/hub/login", data=data, timeout=30)

    def xsrf_headers(self) -> dict:
        token = self.http.cookies.get("_xsrf", path="/hub/") or self.http.cookies.get("_xsrf")
        return {"X-XSRFToken": token} if token else {}

    def start_server(self, username: str, timeout: float = 90, options: dict | None = None) -> None:
        """Ask for a server as the spawn page does, then wait until it answers as ``username``."""
        r = self.http.post(
            f"{self.hub.url}/hub/api/users/{username}/server",
            json=options or {},
            headers=self.xsrf_headers(),
            timeout=30,
        )
        # The login page already starts a server when there is no options form.
        if not (r.status_code in (201, 202) or "already" in r.text):
            r.raise_for_status()
        wait_for(lambda: self.server_status(username) is not None, timeout, interval=0.5, what=f"{username}'s server")

    def progress(self, username: str, until=None, timeout: float = 120, server: str = "") -> list[dict]:
        """The spawn page's progress events (server-sent) of ``username``'s server ``server``,
        until one is ready or failed, or ``until(event)`` is true; TimeoutError after ``timeout``."""
        path = f"/users/{username}/servers/{server}/progress" if server else f"/users/{username}/server/progress"
        events = []
        deadline = time.monotonic() + timeout
        with self.http.get(f"{self.hub.url}/hub/api{path}", stream=True, timeout=timeout) as r:
            for line in r.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    events.append(json.loads(line[5:]))
                    last = events[-1]
                    if last.get("failed") or last.get("ready") or (until and until(last)):
                        return events
                if time.monotonic() > deadline:
                    break
        raise TimeoutError(f"the progress of {username}'s server ended or timed out: {events[-3:]}")

    def api(self, path: str, method: str = "GET", **kwargs) -> requests.Response:
        """The hub's REST API (``/hub/api{path}``) with this session's cookie and XSRF header."""
        kwargs.setdefault("timeout", 30)
        return self.http.request(method, f"{self.hub.url}/hub/api{path}", headers=self.xsrf_headers(), **kwargs)

    def server_models(self, username: str) -> dict:
        """The hub's models of ``username``'s active servers: name ("" the default) -> model."""
        return self.api(f"/users/{username}").json()["servers"]

    def server(self, username: str) -> dict:
        """The hub's model of ``username``'s default server ({} when there is none)."""
        return self.server_models(username).get("", {})

    def stop_server(self, username: str, timeout: float = 90) -> None:
        """Stop ``username``'s server through the REST API and wait until the hub has no server."""
        r = self.api(f"/users/{username}/server", method="DELETE")
        assert r.status_code in (202, 204), r.text
        wait_for(lambda: not self.server(username), timeout, what=f"{username}'s server to stop")

    def ensure_stopped(self, username: str) -> None:
        if self.server(username):
            self.stop_server(username)

    def server_status(self, username: str, page: str = "lab") -> dict | None:
        """``/user/NAME/api/status`` after the browser-style OAuth dance, or None if not up yet.

        ``page``: what the first visit loads to walk the single-user server's OAuth with the hub
        (any page that needs a login; ``files/...`` on a server without JupyterLab)."""
        r = self.http.get(f"{self.hub.url}/user/{username}/api/status", timeout=10)
        if r.status_code == 403:
            # First visit: a page load walks the single-user server's OAuth with the hub.
            self.http.get(f"{self.hub.url}/user/{username}/{page}", timeout=30)
            r = self.http.get(f"{self.hub.url}/user/{username}/api/status", timeout=10)
        return r.json() if r.status_code == 200 else None

    def identity(self, username: str) -> str | None:
        """Whose server answered at ``/user/NAME/``: the name from its ``/api/me``."""
        r = self.http.get(f"{self.hub.url}/user/{username}/api/me", timeout=10)
        return r.json()["identity"]["username"] if r.status_code == 200 else None

    def get(self, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return self.http.get(f"{self.hub.url}{path}", **kwargs)
