"""The token keeper: the user's current OIDC access token, always fresh, in a file.

A token passed in the environment at spawn goes stale within the hour. The keeper, started by the
server extension in every hub-spawned server, asks the hub for the user's current access token
(``GET {hub_api}/gateway/token`` with the server's own API token, see
``science_gateway.hub.api``: the access token and its expiry only, never the refresh token; the
hub refreshes the tokens on the way) before the token it holds expires, and writes it atomically,
mode 0600, to :attr:`TokenKeeper.token_file`: the file named by ``BEARER_TOKEN_FILE`` (WLCG
bearer token discovery), which it also exports to kernels started later, plus any
:attr:`TokenKeeper.extra_token_files` (e.g. the Rucio client's ``[client] auth_token_file_path``).

When the hub says it keeps no token for the user (404, e.g. the demo login, or a hub without the
gateway's route) the keeper says so once and stops. Any other failure (the hub down, a refused
token, an answer of an unexpected shape) is logged without values and retried with a doubling
delay up to :attr:`TokenKeeper.max_retry_interval`. Token values are never logged.

When the identity provider is down across a refresh, the hub keeps the user logged in and hands
back the token it has, which then expires unrefreshed: the keeper never replaces the token file
with a token that expires sooner than the one it holds, says once (a warning) that the token could
not be refreshed and why that usually is, keeps asking at :attr:`TokenKeeper.min_interval`, and
writes the fresh token as soon as the hub has one again. :meth:`TokenKeeper.describe` says the
same to the user (the gateway's REST API shows it).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import tempfile
from pathlib import Path

from jupyter_core.paths import jupyter_runtime_dir
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from traitlets import Bool, Float, List, Unicode, default
from traitlets.config import LoggingConfigurable

from ..core.clock import utcnow  # the one clock (tests patch it here)

TOKEN_FILE_ENV = "BEARER_TOKEN_FILE"
#: the hub API route of the gateway that hands a server its user's access token
TOKEN_ROUTE = "gateway/token"


class NoToken(Exception):
    """The hub keeps no access token for this user (404): nothing to keep."""


class BadAnswer(ValueError):
    """The hub's answer is not ``{"access_token": str, "expires_at": number | null}``.

    The message names what is wrong, never a value from the answer.
    """


class Unrefreshed(Exception):
    """The token the keeper holds (and the hub still hands out) has expired: the hub could not
    refresh it, usually because the identity provider does not answer."""

    def __init__(self, expires_at: float):
        super().__init__(expires_at)
        self.expires_at = expires_at

    def __str__(self) -> str:
        at = datetime.datetime.fromtimestamp(self.expires_at, datetime.timezone.utc)
        return (f"expired at {at:%H:%M:%S} UTC and the hub could not refresh it (its identity provider "
                "may be unreachable)")


def parse_token_answer(body: bytes) -> tuple[str, float | None]:
    """The access token and its expiry (epoch seconds or None) from the route's JSON answer."""
    try:
        data = json.loads(body)
    except ValueError:
        raise BadAnswer("the answer is not JSON") from None
    if not isinstance(data, dict):
        raise BadAnswer(f"the answer is a JSON {type(data).__name__}, not an object")
    token, expires_at = data.get("access_token"), data.get("expires_at")
    if not isinstance(token, str) or not token:
        raise BadAnswer("the answer has no access_token string")
    if expires_at is not None and (isinstance(expires_at, bool) or not isinstance(expires_at, (int, float))):
        raise BadAnswer(f"the answer's expires_at is a {type(expires_at).__name__}, not a number")
    return token, None if expires_at is None else float(expires_at)


def describe_error(error: BaseException) -> str:
    """What a log line may say about a failed fetch: no token values, no response bodies."""
    if isinstance(error, HTTPClientError):
        return f"HTTP {error.code}"  # the status line only; the body could quote anything
    if isinstance(error, (BadAnswer, Unrefreshed)):
        return str(error)
    return type(error).__name__


def write_secret_file(path: Path, content: str) -> None:
    """Replace ``path`` atomically with ``content``; the file is mode 0600 from its first byte."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(content)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def next_delay(expires_at: float | None, now: float, interval: float, margin: float, min_interval: float) -> float:
    """Seconds until the next fetch: ``interval`` at most, and early enough to replace a token
    ``margin`` seconds before it expires, but never sooner than ``min_interval``."""
    if expires_at is None:
        return interval
    return max(min_interval, min(interval, expires_at - margin - now))


class TokenKeeper(LoggingConfigurable):
    """Keeps the user's access token fresh in :attr:`token_file` (see the module docstring)."""

    enabled = Bool(
        True,
        help="""Run the token keeper in hub-spawned servers (it stays off outside a hub, and
        stops when the hub keeps no access token for the user).""",
    ).tag(config=True)

    hub_api_url = Unicode(
        help="The hub's REST API (default: `$JUPYTERHUB_API_URL`, set by the hub at spawn).",
    ).tag(config=True)

    @default("hub_api_url")
    def _hub_api_url_default(self):
        return os.environ.get("JUPYTERHUB_API_URL", "")

    username = Unicode(
        help="The hub user whose token is kept (default: `$JUPYTERHUB_USER`).",
    ).tag(config=True)

    @default("username")
    def _username_default(self):
        return os.environ.get("JUPYTERHUB_USER", "")

    api_token = Unicode(
        help="The server's own hub API token (from `$JUPYTERHUB_API_TOKEN`; not configurable).",
    )

    @default("api_token")
    def _api_token_default(self):
        return os.environ.get("JUPYTERHUB_API_TOKEN", "")

    token_file = Unicode(
        help="""Where the access token is written (mode 0600, replaced atomically). Default:
        `$BEARER_TOKEN_FILE` if set, else `bearer_token` in the Jupyter runtime directory. The
        keeper exports `BEARER_TOKEN_FILE` with this path to kernels started afterwards, so
        WLCG-aware tools (and `science_gateway` clients) find the token.""",
    ).tag(config=True)

    @default("token_file")
    def _token_file_default(self):
        return os.environ.get(TOKEN_FILE_ENV) or os.path.join(jupyter_runtime_dir(), "bearer_token")

    extra_token_files = List(
        Unicode(),
        help="""More paths to write the same token to, e.g. the path the Rucio client reads
        (`[client] auth_token_file_path` in rucio.cfg).""",
    ).tag(config=True)

    interval = Float(
        300.0,
        help="Longest time in seconds between two fetches of the token from the hub.",
    ).tag(config=True)

    refresh_margin = Float(
        120.0,
        help="""Fetch a new token this many seconds before the current one expires. Keep
        the hub's `auth_refresh_age` < this margin <= the hub authenticator's
        `access_token_refresh_margin`, so that the hub refreshes the token when the keeper asks
        (within `auth_refresh_age`, while the keeper retries every `min_interval`).""",
    ).tag(config=True)

    min_interval = Float(
        2.0,
        help="Shortest time in seconds between two fetches (also the first retry after an error).",
    ).tag(config=True)

    max_retry_interval = Float(
        60.0,
        help="Longest wait in seconds between retries after failed fetches (doubling from `min_interval`).",
    ).tag(config=True)

    request_timeout = Float(
        20.0,
        help="Timeout in seconds of one request to the hub API.",
    ).tag(config=True)

    remove_on_stop = Bool(
        True,
        help="Delete the token files when the server stops.",
    ).tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._task: asyncio.Task | None = None
        self._token: str | None = None
        self.expires_at: float | None = None
        self.last_update: float | None = None
        self._problem = ""  # why the token is not fresh, for describe()

    @property
    def paths(self) -> list[Path]:
        return [Path(p) for p in [self.token_file, *self.extra_token_files]]

    def can_run(self) -> bool:
        return bool(self.enabled and self.hub_api_url and self.username and self.api_token)

    def start(self) -> bool:
        """Start keeping the token (in the running event loop); False if not in a hub server."""
        if not self.can_run():
            self.log.info("Token keeper off (not in a hub-spawned server, or disabled)")
            return False
        os.environ[TOKEN_FILE_ENV] = self.token_file
        self._task = asyncio.ensure_future(self._run())
        self.log.info("Token keeper: writing %s's access token to %s", self.username, ", ".join(map(str, self.paths)))
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self.remove_on_stop and self._token is not None:
            for path in self.paths:
                path.unlink(missing_ok=True)

    async def fetch_token(self) -> tuple[str, float | None]:
        """The user's current access token and expiry from the hub; :class:`NoToken` on 404."""
        url = f"{self.hub_api_url.rstrip('/')}/{TOKEN_ROUTE}"
        request = HTTPRequest(
            url,
            headers={"Authorization": f"token {self.api_token}", "Accept": "application/json"},
            request_timeout=self.request_timeout,
        )
        try:
            response = await AsyncHTTPClient().fetch(request)
        except HTTPClientError as e:
            if e.code == 404:
                raise NoToken() from None
            raise
        return parse_token_answer(response.body)

    async def update(self) -> None:
        """Fetch the current token once and write it if it changed (errors propagate).

        A token that expires sooner than the one held is not written (the held one stays in the
        files); a held token past its expiry raises :class:`Unrefreshed` after the fetch.
        """
        token, expires_at = await self.fetch_token()
        older = self.expires_at is not None and expires_at is not None and expires_at < self.expires_at
        if token != self._token and not older:
            for path in self.paths:
                write_secret_file(path, token)
            self._token, self.expires_at = token, expires_at
            self.last_update = utcnow()
            left = f"{self.expires_at - utcnow():.0f}s" if self.expires_at else "unknown time"
            self.log.info("Token keeper: wrote a new access token for %s (valid for %s)", self.username, left)
        elif token == self._token:
            self.expires_at = expires_at
        if self.expires_at is not None and self.expires_at <= utcnow():
            raise Unrefreshed(self.expires_at)

    def describe(self) -> dict:
        """The keeper's state for the user: ``{"state", "message", "expires_at"}``, no token.

        ``state`` is "off" (not in a hub server, or the hub keeps no token), "waiting" (no
        token yet), "fresh", or "stale" (the token held has expired: the hub could not refresh it).
        """
        if self._task is None or self._task.done() and self._token is None:
            return {"state": "off", "message": "no access token is kept for this server", "expires_at": None}
        if self._token is None:
            return {"state": "waiting", "message": self._problem or "fetching the access token from the hub",
                    "expires_at": None}
        if self.expires_at is not None and self.expires_at <= utcnow():
            message = self._problem or f"the access token in {self.token_file} has expired; asking the hub for a fresh one"
            return {"state": "stale", "message": message, "expires_at": self.expires_at}
        return {"state": "fresh", "message": f"the access token in {self.token_file} is valid",
                "expires_at": self.expires_at}

    def retry_delay(self, failures: int) -> float:
        """Seconds before the next try after ``failures`` failed fetches in a row."""
        delay = min(self.max_retry_interval, self.min_interval * 2 ** min(failures - 1, 30))
        if self.expires_at is not None:  # a token still held: never wait past its replacement time
            delay = min(delay, next_delay(self.expires_at, utcnow(), self.interval, self.refresh_margin, self.min_interval))
        return delay

    async def _run(self) -> None:
        failures, last_reason = 0, None
        while True:
            try:
                await self.update()
            except asyncio.CancelledError:
                raise
            except NoToken:
                self.log.info("Token keeper: the hub keeps no access token for %s (this login has none); "
                              "the keeper stops", self.username)
                return
            except Exception as e:  # noqa: BLE001 - any failure: say what (no values) and retry
                failures += 1
                reason = describe_error(e)
                # the first failure of a kind is a warning; repeats of it are not news
                log = self.log.warning if reason != last_reason else self.log.debug
                delay = self.retry_delay(failures)
                if isinstance(e, Unrefreshed):
                    self._problem = (f"the access token in {self.token_file} {reason}; kept there until the "
                                     "hub has a fresh one (asking again every few seconds)")
                    log("Token keeper (%s): %s", self.username, self._problem)
                else:
                    self._problem = f"fetching the access token from the hub failed ({reason}); retrying"
                    log("Token keeper: fetching %s's token from the hub failed (%s); retrying in %.0fs",
                        self.username, reason, delay)
                last_reason = reason
            else:
                if failures:
                    self.log.info("Token keeper: %s's token is fresh again after %d tries", self.username, failures)
                failures, last_reason, self._problem = 0, None, ""
                delay = next_delay(self.expires_at, utcnow(), self.interval, self.refresh_margin, self.min_interval)
            await asyncio.sleep(delay)
