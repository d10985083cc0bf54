"""The token keeper against a stand-in hub API (the real hub is exercised in tests/oidc/)."""

import json
import stat

import pytest
import tornado.web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from science_gateway.jupyter_ext import tokens
from science_gateway.jupyter_ext.tokens import TokenKeeper, next_delay, write_secret_file
from sgtest.hub import async_wait_for

DELAYS = [
    ("no-expiry-uses-interval", None, 0, 300, 60, 2, 300),
    ("far-expiry-uses-interval", 10_000, 0, 300, 60, 2, 300),
    ("replace-before-margin", 100, 0, 300, 60, 2, 40),
    ("inside-margin-min-interval", 50, 0, 300, 60, 2, 2),
    ("expired-min-interval", 10, 20, 300, 60, 2, 2),
]


@pytest.mark.parametrize(
    ("expires_at", "now", "interval", "margin", "min_interval", "expected"),
    [d[1:] for d in DELAYS],
    ids=[d[0] for d in DELAYS],
)
def test_next_delay(expires_at, now, interval, margin, min_interval, expected):
    assert next_delay(expires_at, now, interval, margin, min_interval) == expected


def test_write_secret_file_is_0600_and_atomic(tmp_path):
    path = tmp_path / "sub" / "bt"
    write_secret_file(path, "one")
    write_secret_file(path, "two")
    assert path.read_text() == "two"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["bt"]


class FakeHub:
    """Serves GET /hub/api/users/alice like a hub whose user/server roles allow auth_state."""

    def __init__(self):
        self.tokens = iter(f"access-{i}" for i in range(1000))
        self.show_auth_state = True
        self.requests = 0
        self.seen_auth = set()

    def app(self):
        hub = self

        class User(tornado.web.RequestHandler):
            def get(self, name):
                hub.requests += 1
                hub.seen_auth.add(self.request.headers.get("Authorization"))
                model = {"name": name}
                if hub.show_auth_state:
                    model["auth_state"] = {"access_token": next(hub.tokens), "expires_at": tokens.utcnow() + 30}
                self.write(json.dumps(model))

        return tornado.web.Application([(r"/hub/api/users/([^/]+)", User)])


@pytest.fixture
async def fake_hub():
    hub = FakeHub()
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(hub.app())
    server.add_sockets(sockets)
    hub.url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}/hub/api"
    yield hub
    server.stop()


def keeper(fake_hub, tmp_path, **traits):
    return TokenKeeper(
        hub_api_url=fake_hub.url,
        username="alice",
        api_token="server-token",
        token_file=str(tmp_path / "runtime" / "bearer_token"),
        extra_token_files=[str(tmp_path / "rucio" / "auth_token_for_account_alice")],
        **traits,
    )


async def test_update_writes_every_file(fake_hub, tmp_path):
    k = keeper(fake_hub, tmp_path)
    assert await k.update() is True
    for path in k.paths:
        assert path.read_text() == "access-0"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert fake_hub.seen_auth == {"token server-token"}
    assert k.expires_at is not None


async def test_no_auth_state_is_reported_not_written(fake_hub, tmp_path):
    fake_hub.show_auth_state = False
    k = keeper(fake_hub, tmp_path)
    assert await k.update() is False
    assert not any(p.exists() for p in k.paths)


async def test_keeper_replaces_token_before_expiry_and_cleans_up(fake_hub, tmp_path, monkeypatch):
    # start() sets it: setenv first so monkeypatch records (and restores) the variable's absence
    monkeypatch.setenv(tokens.TOKEN_FILE_ENV, "")
    monkeypatch.delenv(tokens.TOKEN_FILE_ENV)
    # 30 s tokens, 29.9 s margin: the keeper fetches at min_interval
    k = keeper(fake_hub, tmp_path, refresh_margin=29.9, min_interval=0.05)
    assert k.start() is True
    assert tokens.os.environ[tokens.TOKEN_FILE_ENV] == k.token_file
    await async_wait_for(lambda: fake_hub.requests >= 3, 60, interval=0.05, what="three token fetches")
    assert k.paths[0].read_text().startswith("access-")
    await k.stop()
    assert not any(p.exists() for p in k.paths)


def test_keeper_stays_off_outside_a_hub(monkeypatch, tmp_path):
    for var in ("JUPYTERHUB_API_URL", "JUPYTERHUB_API_TOKEN", "JUPYTERHUB_USER"):
        monkeypatch.delenv(var, raising=False)
    k = TokenKeeper(token_file=str(tmp_path / "bt"))
    assert k.start() is False
