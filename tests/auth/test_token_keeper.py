"""The token keeper against a stand-in for the hub's token route (the real hub: tests/auth/test_oidc_login.py)."""

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
    """Serves GET /hub/api/gateway/token like the gateway's hub route.

    ``answers`` is a list of what to send next (a dict or raw bytes as the JSON body, or an int
    status); when it runs out, a fresh ``{"access_token", "expires_at"}``.
    """

    def __init__(self):
        self.tokens = iter(f"access-{i}" for i in range(1000))
        self.answers = []
        self.requests = 0
        self.seen_auth = set()

    def app(self):
        hub = self

        class Token(tornado.web.RequestHandler):
            def get(self):
                hub.requests += 1
                hub.seen_auth.add(self.request.headers.get("Authorization"))
                answer = hub.answers.pop(0) if hub.answers else None
                if isinstance(answer, int):
                    self.set_status(answer)
                    self.write(json.dumps({"status": answer, "message": "no token: secret-in-body"}))
                elif isinstance(answer, bytes):
                    self.write(answer)
                else:
                    self.write(json.dumps(answer or {"access_token": next(hub.tokens), "expires_at": tokens.utcnow() + 30}))

        return tornado.web.Application([(r"/hub/api/gateway/token", Token)])


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
    await k.update()
    for path in k.paths:
        assert path.read_text() == "access-0"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert fake_hub.seen_auth == {"token server-token"}
    assert k.expires_at is not None


SHAPES = [
    ("not-json", b"<html>secret-value</html>", "not JSON"),
    ("a-list", b'["secret-value"]', "JSON list"),
    ("no-token", b'{"auth_state": {"access_token": "secret-value"}}', "no access_token"),
    ("token-not-a-string", b'{"access_token": 12345}', "no access_token"),
    ("empty-token", b'{"access_token": ""}', "no access_token"),
    ("expiry-a-string", b'{"access_token": "secret-value", "expires_at": "secret-value"}', "expires_at is a str"),
    ("expiry-a-bool", b'{"access_token": "secret-value", "expires_at": true}', "expires_at is a bool"),
]


@pytest.mark.parametrize(("body", "message"), [s[1:] for s in SHAPES], ids=[s[0] for s in SHAPES])
def test_an_unexpected_answer_is_named_without_its_values(body, message):
    with pytest.raises(tokens.BadAnswer, match=message) as info:
        tokens.parse_token_answer(body)
    assert "secret-value" not in str(info.value) and "12345" not in str(info.value)


def test_a_good_answer_parses():
    assert tokens.parse_token_answer(b'{"access_token": "t", "expires_at": 10}') == ("t", 10.0)
    assert tokens.parse_token_answer(b'{"access_token": "t", "expires_at": null}') == ("t", None)


def no_token_file_env(monkeypatch):
    """start() sets BEARER_TOKEN_FILE: setenv first, so monkeypatch restores the variable's absence."""
    monkeypatch.setenv(tokens.TOKEN_FILE_ENV, "")
    monkeypatch.delenv(tokens.TOKEN_FILE_ENV)


async def test_keeper_survives_bad_answers_and_errors_then_writes(fake_hub, tmp_path, caplog, monkeypatch):
    """Before: a 500 or a shape it did not expect ended the keeper's task for good."""
    no_token_file_env(monkeypatch)
    fake_hub.answers = [b'["secret-value"]', b'["secret-value"]', 500, b'{"access_token": 1}']
    k = keeper(fake_hub, tmp_path, min_interval=0.01, max_retry_interval=0.02)
    caplog.set_level("DEBUG")
    assert k.start() is True
    try:
        await async_wait_for(lambda: k.paths[0].exists(), 10, interval=0.025, what="the token file")
        assert k.paths[0].read_text().startswith("access-")
        assert not k._task.done()
    finally:
        await k.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and r.name == k.log.name]
    # one warning per kind of failure (the repeated list is not news), none with a value
    assert len(warnings) == 3, warnings
    assert any("JSON list" in w for w in warnings) and any("HTTP 500" in w for w in warnings)
    assert not [r for r in caplog.records if "secret-value" in r.getMessage() or "access-" in r.getMessage()]


async def test_no_token_at_the_hub_stops_the_keeper_with_one_line(fake_hub, tmp_path, caplog, monkeypatch):
    no_token_file_env(monkeypatch)
    fake_hub.answers = [404, 404, 404]
    k = keeper(fake_hub, tmp_path, min_interval=0.01)
    caplog.set_level("DEBUG")
    assert k.start() is True
    await async_wait_for(lambda: k._task.done(), 10, interval=0.025, what="the keeper to stop")
    await k.stop()
    assert fake_hub.requests == 1
    assert not any(p.exists() for p in k.paths)
    assert not [r for r in caplog.records if r.levelname == "WARNING" and r.name == k.log.name]
    assert [r.getMessage() for r in caplog.records if "keeps no access token" in r.getMessage()] == [
        "Token keeper: the hub keeps no access token for alice (this login has none); the keeper stops"
    ]


RETRIES = [("first", 1, None, 0.5), ("doubles", 3, None, 2.0), ("capped", 20, None, 8.0),
           ("held-token-due", 20, 1000 + 60 + 1, 1.0)]


@pytest.mark.parametrize(("failures", "expires_at", "expected"), [r[1:] for r in RETRIES], ids=[r[0] for r in RETRIES])
def test_retry_delay_doubles_up_to_the_cap(failures, expires_at, expected, monkeypatch):
    monkeypatch.setattr(tokens, "utcnow", lambda: 1000.0)
    k = TokenKeeper(min_interval=0.5, max_retry_interval=8, refresh_margin=60, interval=300)
    k.expires_at = expires_at
    assert k.retry_delay(failures) == expected


async def test_keeper_replaces_token_before_expiry_and_cleans_up(fake_hub, tmp_path, monkeypatch):
    no_token_file_env(monkeypatch)
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


async def test_an_unrefreshed_token_stays_in_the_file_with_one_warning_then_the_fresh_one(fake_hub, tmp_path, caplog,
                                                                                          monkeypatch):
    """The identity provider down across a refresh: the hub hands back the token it has, which
    expires; the keeper keeps it (never an older one), says so once, and writes the fresh one."""
    no_token_file_env(monkeypatch)
    now = tokens.utcnow()
    fake_hub.answers = [
        {"access_token": "access-held", "expires_at": now + 0.3},
        *[{"access_token": "access-held", "expires_at": now + 0.3}] * 6,
        {"access_token": "access-older", "expires_at": now - 100},
        {"access_token": "access-held", "expires_at": now + 0.3},
    ]
    k = keeper(fake_hub, tmp_path, min_interval=0.1, refresh_margin=0.1)
    caplog.set_level("DEBUG")
    assert k.describe()["state"] == "off"
    assert k.start() is True
    try:
        await async_wait_for(lambda: "could not refresh" in k.describe()["message"], 10, interval=0.02,
                             what="the keeper to say the token could not be refreshed")
        assert k.describe()["state"] == "stale" and "access-" not in json.dumps(k.describe())
        await async_wait_for(lambda: not fake_hub.answers, 20, interval=0.02, what="the hub's answers")
        assert k.paths[0].read_text() == "access-held"  # never the older one
        await async_wait_for(lambda: k.describe()["state"] == "fresh", 10, interval=0.02, what="a fresh token")
        assert k.paths[0].read_text().startswith("access-") and k.paths[0].read_text() != "access-held"
    finally:
        await k.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and r.name == k.log.name]
    assert len(warnings) == 1 and "could not refresh" in warnings[0], warnings
    assert any("fresh again" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if "access-" in r.getMessage()]
