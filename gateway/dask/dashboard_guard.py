"""The scheduler's dashboard answers only connections its own user opened.

The dashboard is plain HTTP on 127.0.0.1 (jupyter-server-proxy in the user's server, on the same
node, reaches it there), without a login of its own: any local user could fetch it with an HTTP
client. The guard wraps the dashboard's HTTP server so each new connection is accepted only when
the socket at the other end belongs to this process's uid (``/proc/net/tcp{,6}``, see
:mod:`science_gateway.core.sockets`); others are closed before a byte is read. The user's own
server (the proxy behind ``cluster.dashboard_link``) runs as the same uid, so the link keeps
working for its owner. In the embedded default every user is one unix user: no difference there.
"""

from __future__ import annotations

import logging
import os

from ..core.sockets import connection_owner, read_tables

log = logging.getLogger(__name__)


def own_connection(peer, server, *, uid: int | None = None, tables=None) -> bool:
    """Whether the connection from ``peer`` to ``server`` (``(host, port, ...)``) was opened by ``uid``."""
    uid = os.getuid() if uid is None else uid
    owner = connection_owner(peer[:2], server[:2], read_tables() if tables is None else tables)
    return owner == uid


def guard(http_server) -> None:
    """Accept only this uid's connections on ``http_server`` (a ``tornado.httpserver.HTTPServer``)."""
    if getattr(http_server, "science_gateway_guard", False):
        return
    accept = http_server.handle_stream

    def handle_stream(stream, address):
        try:
            allowed = own_connection(address, stream.socket.getsockname())
        except (OSError, ValueError) as e:  # a socket gone already, an address we cannot read
            log.info("Science Gateway: dashboard connection from %s refused: %s", address, e)
            allowed = False
        if not allowed:
            log.info("Science Gateway: dashboard connection from %s refused: not this user's", address)
            stream.close()
            return None
        return accept(stream, address)

    http_server.handle_stream = handle_stream
    http_server.science_gateway_guard = True
