"""Who owns a TCP socket on this node: the ``uid`` column of the kernel's socket tables.

``/proc/net/tcp`` and ``/proc/net/tcp6`` list every TCP socket of the network namespace with the
uid that opened it, readable by every user. The gateway reads them to tell the user's own sockets
from other users' on a shared node: the server's proxy guard (who listens on a port) and the Dask
dashboard's guard (who is connecting). Parsing is pure (the tables' text in, values out);
:func:`read_tables` is the one reader.
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

#: the kernel's socket tables
PROC_NET_TCP = ("/proc/net/tcp", "/proc/net/tcp6")
#: ``st`` of a listening socket in those tables
TCP_LISTEN = "0A"
TCP_ESTABLISHED = "01"


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """``0100007F`` -> 127.0.0.1: the tables hold each 32-bit word in the host's (little-endian) order."""
    raw = bytes.fromhex(hex_address)
    return ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)))


class Socket(NamedTuple):
    """One row of a socket table."""

    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int
    remote_address: ipaddress.IPv4Address | ipaddress.IPv6Address
    remote_port: int
    state: str
    uid: int


def _end(field: str):
    address, _, port = field.partition(":")
    return _plain(_address(address)), int(port, 16)


def _plain(address):
    """An IPv4-mapped IPv6 address as the IPv4 address it is."""
    return getattr(address, "ipv4_mapped", None) or address


def sockets(table: str) -> list[Socket]:
    """Every socket in the text of one ``/proc/net/tcp*`` table."""
    found = []
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        found.append(Socket(*_end(fields[1]), *_end(fields[2]), fields[3], int(fields[7])))
    return found


def listeners(table: str) -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int, int]]:
    """``(address, port, uid)`` of each listening socket in one table's text."""
    return [(s.address, s.port, s.uid) for s in sockets(table) if s.state == TCP_LISTEN]


def port_owners(port: int, tables) -> set[int]:
    """The uids listening on ``port`` on any address (``tables``: the texts of the socket tables)."""
    return {uid for table in tables for _address_, listen_port, uid in listeners(table) if listen_port == port}


def connection_owner(peer: tuple[str, int], server: tuple[str, int], tables) -> int | None:
    """The uid that opened the connection from ``peer`` to ``server`` (both ``(host, port)`` on this node).

    That is the established socket whose local end is ``peer`` and remote end ``server``; ``None``
    when there is none (the peer is on another machine, or gone).
    """
    peer_end = (_plain(ipaddress.ip_address(peer[0].split("%")[0])), int(peer[1]))
    server_end = (_plain(ipaddress.ip_address(server[0].split("%")[0])), int(server[1]))
    for table in tables:
        for s in sockets(table):
            if s.state == TCP_ESTABLISHED and (s.address, s.port) == peer_end \
                    and (s.remote_address, s.remote_port) == server_end:
                return s.uid
    return None


def read_tables(paths=PROC_NET_TCP) -> list[str]:
    """The texts of the socket tables (a kernel without IPv6 has no ``tcp6``)."""
    tables = []
    for path in paths:
        try:
            with open(path) as f:
                tables.append(f.read())
        except FileNotFoundError:
            continue
    return tables
