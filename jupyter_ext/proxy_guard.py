"""The user's ``/proxy/PORT/`` reaches only the user's own ports (e.g. their Dask dashboards).

jupyter-server-proxy proxies ``{base_url}/proxy/PORT/...`` (and ``/proxy/HOST:PORT/...`` for the
hosts in ``ServerProxy.host_allowlist``, by default ``localhost`` and ``127.0.0.1``) to whatever
listens there, including another user's Dask dashboard on the same node. Its ``host_allowlist``
hook sees only the host, never the port, and the plain ``/proxy/PORT/`` route does not consult it
at all, so the guard wraps its two handler classes instead: before proxying to a local port, the
guarded handler asks the kernel who owns the listening sockets on that port (the ``uid`` column of
``/proc/net/tcp`` and ``/proc/net/tcp6``) and answers 403 unless every one of them belongs to
this server's own uid (404 when nothing listens there). On Slurm each user's server, kernels and
Dask schedulers run as that user's unix account, so a user reaches their own dashboards and
nobody else's (sockets: :mod:`science_gateway.core.sockets`). In the embedded default every
server runs as one unix user: there it cannot tell users apart (that setup is for a first look on
one machine, not for users who must be kept apart).

Remote hosts an admin allows in ``host_allowlist`` are left to that list: the owner of a socket
on another machine is not visible here.

:func:`install` swaps the handler classes in the server's routing table; the extension calls it
when it loads and again when the server starts (whichever order the extensions load in).
"""

from __future__ import annotations

import logging
import os

from ..core.sockets import port_owners, read_tables

log = logging.getLogger(__name__)

#: host names the proxy resolves to this machine (what jupyter-server-proxy allows by default)
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def check_port(port: int, *, uid: int | None = None, tables=None) -> tuple[int, str] | None:
    """``None`` when ``port`` is this user's to proxy, else ``(status, reason)``: 404 or 403."""
    uid = os.getuid() if uid is None else uid
    owners = port_owners(port, read_tables() if tables is None else tables)
    if not owners:
        return 404, f"nothing listens on port {port} on this node"
    if owners != {uid}:
        return 403, (
            f"port {port} is not yours: this server proxies only to ports its own user listens on "
            "(your Dask dashboards: cluster.dashboard_link)"
        )
    return None


def _guarded(handler_class, port_of):
    """A subclass of one of jupyter-server-proxy's handlers that checks the port after authentication."""

    class Guarded(handler_class):
        async def prepare(self, *args, **kwargs):
            await super().prepare(*args, **kwargs)  # authenticates (403/redirect for strangers)
            if self._finished:
                return
            host, port = port_of(self.path_args)
            if host not in LOCAL_HOSTS:
                return  # a remote host: ServerProxy.host_allowlist decides
            refused = check_port(int(port))
            if refused:
                from tornado import web

                status, reason = refused
                self.log.info("Science Gateway: refused to proxy to port %s (%s)", port, status)
                raise web.HTTPError(status, reason)

    Guarded.__name__ = Guarded.__qualname__ = f"OwnPorts{handler_class.__name__}"
    Guarded.science_gateway_guard = True
    return Guarded


def _targets():
    """jupyter-server-proxy's port routes: handler class -> (host, port) from the URL's groups."""
    from jupyter_server_proxy.handlers import LocalProxyHandler, RemoteProxyHandler

    return {
        LocalProxyHandler: lambda args: ("localhost", args[0]),
        RemoteProxyHandler: lambda args: (args[0], args[1]),
    }


def _rules(router):
    for rule in getattr(router, "rules", ()):
        yield rule
        yield from _rules(rule.target)


def install(web_app) -> int:
    """Guard every jupyter-server-proxy port route of ``web_app``; returns how many it guarded now."""
    try:
        targets = _targets()
    except ImportError:  # jupyter-server-proxy (the dask extra) not installed: no routes to guard
        return 0
    guarded = {cls: _guarded(cls, port_of) for cls, port_of in targets.items()}
    count = 0
    for router in (web_app.default_router, web_app.wildcard_router):
        for rule in _rules(router):
            if rule.target in guarded:
                rule.target = guarded[rule.target]
                count += 1
    if count:
        log.info("Science Gateway: /proxy/PORT/ reaches only this user's own ports (%d routes)", count)
    return count
