"""``/proxy/PORT/`` reaches only the server's own user's ports: the socket tables, then a real Jupyter Server.

The server runs with jupyter-server-proxy and the gateway's extension; a port is served by this
test's own uid (allowed), by another unix user (``nobody``: refused) and by nobody at all (404).
Without the gateway's extension the same server proxies to the other user's port: the hole the
guard closes.
"""

import os
import pwd
import subprocess

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from science_gateway.core.sockets import connection_owner, listeners, port_owners
from science_gateway.jupyter_ext.proxy_guard import check_port

# jupyter-server-proxy authenticates in prepare(), not with the decorators jupyter_server looks for
# when allow_unauthenticated_access is False: its warning (an error here) would stop it loading
pytestmark = pytest.mark.filterwarnings("ignore::jupyter_server.utils.JupyterServerAuthWarning")

# /proc/net/tcp as the kernel writes it: 127.0.0.1:8787 (uid 1001) and 0.0.0.0:22 (root) listen,
# 127.0.0.1:8787 -> 127.0.0.1:41000 is an established connection (uid 1002, not a listener)
TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2253 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 1 1 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 0 10 0
   2: 0100007F:A028 0100007F:2253 01 00000000:00000000 00:00000000 00000000  1002        0 3 1 0 0 10 0
"""
# /proc/net/tcp6: [::1]:8787 (uid 1002) and [::]:9000 (uid 1001) listen
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:2253 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1002        0 4 1 0 0 10 0
   1: 00000000000000000000000000000000:2328 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 5 1 0 0 10 0
"""


def test_listeners_are_read_from_the_socket_tables():
    assert [(str(a), port, uid) for a, port, uid in listeners(TCP)] == [("127.0.0.1", 8787, 1001), ("0.0.0.0", 22, 0)]
    assert [(str(a), port, uid) for a, port, uid in listeners(TCP6)] == [("::1", 8787, 1002), ("::", 9000, 1001)]


def test_connection_owner_is_the_uid_at_the_peers_end():
    tables = [TCP, TCP6]
    assert connection_owner(("127.0.0.1", 41000), ("127.0.0.1", 8787), tables) == 1002
    assert connection_owner(("::ffff:127.0.0.1", 41000), ("127.0.0.1", 8787), tables) == 1002
    # the server's end of that connection, a listener, an unknown peer: nobody's connection
    assert connection_owner(("127.0.0.1", 8787), ("127.0.0.1", 41000), tables) is None
    assert connection_owner(("127.0.0.1", 41000), ("127.0.0.1", 9999), tables) is None
    assert connection_owner(("10.0.0.7", 41000), ("127.0.0.1", 8787), tables) is None


@pytest.mark.parametrize(
    "port, tables, result",
    [
        pytest.param(9000, [TCP, TCP6], None, id="own-port"),
        pytest.param(22, [TCP, TCP6], 403, id="root-port"),
        pytest.param(8787, [TCP], None, id="own-ipv4-listener"),
        # someone else listens on the IPv6 loopback of the same port: "localhost" could reach it
        pytest.param(8787, [TCP, TCP6], 403, id="shared-port-other-user-on-ipv6"),
        pytest.param(41000, [TCP, TCP6], 404, id="a-connection-is-no-listener"),
        pytest.param(5555, [TCP, TCP6], 404, id="nothing-listens"),
    ],
)
def test_check_port(port, tables, result):
    refused = check_port(port, uid=1001, tables=tables)
    assert (refused and refused[0]) == result
    if result == 403:
        assert f"port {port} is not yours" in refused[1] and "dashboard_link" in refused[1]
    assert port_owners(8787, [TCP, TCP6]) == {1001, 1002}


#: a tiny HTTP server on a free loopback port, 200 "hello" on every path (absolute routes keep the prefix)
SERVE = """
import http.server
class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")
s = http.server.HTTPServer(("127.0.0.1", 0), Hello)
print(s.server_address[1], flush=True)
s.serve_forever()
"""


def serve(user=None):
    """A tiny HTTP server on a free loopback port, as ``user`` (default: this test's uid)."""
    proc = subprocess.Popen(["/usr/bin/python3", "-c", SERVE], stdout=subprocess.PIPE, text=True, cwd="/tmp",
                            user=user, stderr=subprocess.DEVNULL)
    port = int(proc.stdout.readline())
    proc.stdout.close()
    return proc, port


@pytest.fixture
def ports():
    if os.getuid() != 0:
        pytest.skip("serving a port as another unix user needs root")
    pwd.getpwnam("nobody")
    procs = []
    try:
        own, own_port = serve()
        procs.append(own)
        other, other_port = serve("nobody")
        procs.append(other)
        yield {"own": own_port, "other": other_port}
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)


def server_config(extensions):
    return {"ServerApp": {"jpserver_extensions": extensions, "allow_unauthenticated_access": False}}


@pytest.fixture
def jp_server_config(request):
    return server_config(getattr(request, "param", {"jupyter_server_proxy": True, "science_gateway.jupyter_ext": True}))


async def test_proxy_reaches_own_ports_only(jp_fetch, ports, jp_http_port, jp_base_url, jp_auth_header):
    assert (await jp_fetch("proxy", str(ports["own"]), "")).code == 200
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("proxy", str(ports["other"]), "")
    assert info.value.code == 403
    assert f"port {ports['other']} is not yours" in info.value.response.body.decode()

    # every port route (jp_fetch would escape the ":" of host:port)
    async def status(path):
        url = f"http://127.0.0.1:{jp_http_port}{jp_base_url}proxy/{path}"
        response = await AsyncHTTPClient().fetch(url, headers=jp_auth_header, raise_error=False)
        return response.code

    # localhost and 127.0.0.1 are jupyter-server-proxy's default host_allowlist
    for route in ("", "absolute/", "localhost:", "127.0.0.1:", "absolute/localhost:"):
        assert await status(f"{route}{ports['own']}/") == 200, route
        assert await status(f"{route}{ports['other']}/") == 403, route


async def test_proxy_to_a_port_nobody_listens_on_is_404(jp_fetch, ports):
    proc, port = serve()
    proc.kill()
    proc.wait(10)
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("proxy", str(port), "")
    assert info.value.code == 404


async def test_strangers_are_still_refused_before_the_port_check(jp_fetch, ports):
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("proxy", str(ports["own"]), "", headers={"Authorization": ""}, follow_redirects=False)
    assert info.value.code in (302, 403)


@pytest.mark.parametrize("jp_server_config", [{"jupyter_server_proxy": True}], indirect=True)
async def test_without_the_gateway_the_proxy_reaches_another_users_port(jp_fetch, ports):
    # the hole the guard closes: stock jupyter-server-proxy proxies to any local port
    assert (await jp_fetch("proxy", str(ports["other"]), "")).code == 200

