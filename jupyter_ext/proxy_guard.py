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
nobody else's. In the embedded default every server runs as one unix user: there it cannot tell
users apart (and needs not: it is a single-person setup).

Remote hosts an admin allows in ``host_allowlist`` are left to that list: the owner of a socket
on another machine is not visible here.

:func:`install` swaps the handler classes in the server's routing table; the extension calls it
when it loads and again when the server starts (whichever order the extensions load in).
"""

from __future__ import annotations

import ipaddress
import logging
import os

log = logging.getLogger(__name__)

#: the kernel's socket tables
PROC_NET_TCP = ("/proc/net/tcp", "/proc/net/tcp6")
#: ``st`` of a listening socket in those tables
TCP_LISTEN = "0A"
#: host names the proxy resolves to this machine (what jupyter-server-proxy allows by default)
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """``0100007F`` -> 127.0.0.1: the tables hold each 32-bit word in the host's (little-endian) order."""
    raw = bytes.fromhex(hex_address)
    return ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)))


def listeners(table: str) -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int, int]]:
    """``(address, port, uid)`` of each listening socket in the text of one ``/proc/net/tcp*`` table."""
    found = []
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8 or fields[3] != TCP_LISTEN:
            continue
        address, _, port = fields[1].partition(":")
        found.append((_address(address), int(port, 16), int(fields[7])))
    return found


def port_owners(port: int, tables) -> set[int]:
    """The uids listening on ``port`` on any address (``tables``: the texts of the socket tables)."""
    return {uid for table in tables for _address_, listen_port, uid in listeners(table) if listen_port == port}


def read_tables(paths=PROC_NET_TCP) -> list[str]:
    tables = []
    for path in paths:
        try:
            with open(path) as f:
                tables.append(f.read())
        except FileNotFoundError:  # a kernel without IPv6
            continue
    return tables


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
