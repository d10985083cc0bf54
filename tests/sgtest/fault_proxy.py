"""A TCP proxy of the tests' own in front of a real service, with faults switched on demand.

Point a client (a user's server, a hub) at :attr:`FaultProxy.url` instead of the service; the
shared service itself is never touched. While :meth:`~FaultProxy.pass_through` (the start) it
forwards bytes both ways; the faults are:

- :meth:`~FaultProxy.http_error`: every HTTP request is answered with that status (500: an
  HTML page like a crashed web framework's, no JSON error body) without reaching the service;
- :meth:`~FaultProxy.down`: the port stops listening (connection refused: the service host is
  unreachable), until a later mode opens it again on the same port;
- :meth:`~FaultProxy.hang`: connections are accepted and never answered (a black hole: the
  client's own timeout is all that ends a call).

Each switch closes the connections open at that moment, so a client's kept-alive connection
meets the new mode on its next request as a new connection would. The proxy runs its own event
loop in a daemon thread, so sync tests, async tests and other processes can all use it; it binds
127.0.0.1 on a free port (or the given one). Counters (:attr:`~FaultProxy.counts`) say how many
connections each mode saw, so a test can check the traffic really went through the proxy.

    with FaultProxy("http://127.0.0.1:18080") as proxy:
        client = make_client(proxy.url)
        proxy.http_error(500)
        ...
        proxy.down()
        ...
        proxy.pass_through()
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from http import HTTPStatus
from urllib.parse import urlsplit

PASS, ERROR, DOWN, HANG = "pass", "error", "down", "hang"
MODES = (PASS, ERROR, DOWN, HANG)
#: what a framework's default 500 page looks like: HTML, no machine-readable error
ERROR_BODY = "<!doctype html><title>{code} {reason}</title><h1>{reason}</h1><p>injected by sgtest.fault_proxy</p>"
_HEAD_LIMIT = 64 * 1024


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "//" in url else f"http://{url}")
    if parts.scheme not in ("http", "tcp") or not parts.hostname:
        raise ValueError(f"FaultProxy forwards plain TCP/HTTP: {url!r} is not http://host:port")
    return parts.hostname, parts.port or 80


class FaultProxy:
    """A proxy to ``upstream`` (``http://host:port``) whose faults a test switches (module docstring)."""

    def __init__(self, upstream: str, host: str = "127.0.0.1", port: int = 0):
        self.upstream = _address(upstream)
        self.host, self.port = host, port
        self.mode = PASS
        self.status = 500
        #: connections accepted per mode, and HTTP requests answered with an injected error
        self.counts: Counter = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    # -- what a test calls -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def route(self, url: str) -> str:
        """``url`` of the service (e.g. an endpoint its discovery document names), through the proxy."""
        parts = urlsplit(url)
        if (parts.hostname, parts.port or 80) != self.upstream:
            raise ValueError(f"{url!r} is not on the proxied service {self.upstream[0]}:{self.upstream[1]}")
        return parts._replace(scheme="http", netloc=f"{self.host}:{self.port}").geturl()

    def start(self) -> "FaultProxy":
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sgtest-fault-proxy", daemon=True)
        self._thread.start()
        self._run(self._listen())
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        self._run(self._close(listening=True))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    def pass_through(self) -> None:
        """Forward to the service again (listening again after :meth:`down`)."""
        self._switch(PASS)

    def http_error(self, status: int = 500) -> None:
        """Answer every HTTP request with ``status`` (an HTML body), never reaching the service."""
        self.status = int(status)
        self._switch(ERROR)

    def down(self) -> None:
        """Stop listening: connections are refused, as from a host whose service is gone."""
        self._switch(DOWN)

    def hang(self) -> None:
        """Accept connections and never answer them."""
        self._switch(HANG)

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- inside the proxy's loop ---------------------------------------------------------------------

    def _run(self, coro, timeout: float = 10):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _switch(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {MODES}")
        self._run(self._set_mode(mode))

    async def _set_mode(self, mode: str) -> None:
        self.mode = mode
        await self._close(listening=mode == DOWN)
        if mode != DOWN and self._server is None:
            await self._listen()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self, listening: bool) -> None:
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()
        if listening and self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mode = self.mode
        self.counts[mode] += 1
        self._open.add(writer)
        try:
            if mode == PASS:
                await self._forward(reader, writer)
            elif mode == ERROR:
                await self._answer_errors(reader, writer)
            else:  # HANG (DOWN does not listen): read and drop until the mode changes
                while await reader.read(65536):
                    pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            self._open.discard(writer)
            writer.transport.abort()

    async def _forward(self, reader, writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            return  # the service itself is down: the client sees the connection close
        self._open.add(up_writer)

        async def pipe(src, dst):
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            finally:
                dst.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)
        finally:
            self._open.discard(up_writer)

    async def _answer_errors(self, reader, writer) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > _HEAD_LIMIT:
                return
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length" and value.strip().isdigit():
                    length = int(value.strip())
                elif name.strip().lower() == b"transfer-encoding":
                    length = -1  # chunked: answer, then close
            if length > 0:
                await reader.readexactly(length)
            reason = HTTPStatus(self.status).phrase if self.status in HTTPStatus._value2member_map_ else "Error"
            body = ERROR_BODY.format(code=self.status, reason=reason).encode()
            self.counts["errors_answered"] += 1  # before the answer: a client may look at once
            writer.write(
                f"HTTP/1.1 {self.status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode() + body
            )
            await writer.drain()
            if length < 0:
                return
