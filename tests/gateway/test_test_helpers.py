"""The shared test helpers (tests/sgtest) do what the suite relies on."""

import os
import subprocess
import sys

import pytest

from sgtest import rucio_transfers as rt
from sgtest.commands import FakeCommand, count_calls
from sgtest.isolation import changed_globals, check_globals_restored, process_globals


def test_a_changed_environment_is_named_without_its_values():
    before = process_globals()
    after = {**before, "environ": {**before["environ"], "SG_LEAK": "s3cret-token"}}
    after["environ"].pop("PATH")
    changes = changed_globals(before, after)
    assert changes == ["os.environ set: SG_LEAK", "os.environ removed: PATH"]
    assert "s3cret" not in " ".join(changes)


def test_a_test_that_leaves_the_environment_changed_fails():
    before = process_globals()
    os.environ["SG_LEAK"] = "1"
    try:
        with pytest.raises(pytest.fail.Exception, match=r"left process globals changed \(os.environ set: SG_LEAK\)"):
            check_globals_restored(before, "this test")
        # restored on the way, so the leak does not reach the next test
        assert "SG_LEAK" not in os.environ
    finally:
        os.environ.pop("SG_LEAK", None)


def test_sys_path_and_tempdir_changes_are_caught(monkeypatch, tmp_path):
    before = process_globals()
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    assert changed_globals(before, process_globals()) == ["sys.path changed", "tempfile.gettempdir() changed"]
    monkeypatch.undo()
    assert changed_globals(before, process_globals()) == []
    assert str(tmp_path) not in sys.path


def test_rucio_token_dir_is_private_inside_the_block_and_restored_after(tmp_path):
    pytest.importorskip("rucio.client.baseclient")
    from rucio.client.baseclient import BaseClient

    shared = BaseClient.TOKEN_PATH_PREFIX
    with rt.private_token_dir(tmp_path):
        # what a Client built now uses: <prefix><unix user>/auth_token_for_account_<account>
        assert BaseClient.TOKEN_PATH_PREFIX == f"{tmp_path}/.rucio_"
    assert BaseClient.TOKEN_PATH_PREFIX == shared
    assert "TMPDIR" not in os.environ or os.environ["TMPDIR"] != str(tmp_path)


def test_rucio_env_with_a_token_dir_says_what_to_write_instead(tmp_path):
    with pytest.raises(TypeError, match="private_token_dir"):
        rt.rucio_env(tmp_path)


def test_a_fake_command_answers_what_the_test_set_and_counts_calls(tmp_path):
    squeue = FakeCommand(tmp_path, "squeue", out="11|RUNNING\n")
    assert subprocess.run([squeue.path, "--noheader"], capture_output=True, text=True).stdout == "11|RUNNING\n"
    squeue.set(out="")
    assert subprocess.run([squeue.path], capture_output=True, text=True).stdout == ""
    squeue.set(mode="fail")
    failed = subprocess.run([squeue.path], capture_output=True, text=True)
    assert failed.returncode == 1 and "Unable to contact slurm controller" in failed.stderr
    assert squeue.calls() == 3
    with pytest.raises(ValueError, match="ok, fail or hang"):
        squeue.set(mode="broken")


def test_wrappers_run_the_real_command_and_share_one_log(tmp_path):
    log = tmp_path / "calls.log"
    echo = FakeCommand(tmp_path / "bin", "echo", real="/bin/echo", log=log)
    true = FakeCommand(tmp_path / "bin", "true", real="/bin/true", log=log)
    assert subprocess.run([echo.path, "a b"], capture_output=True, text=True).stdout == "a b\n"
    subprocess.run([true.path], check=True)
    subprocess.run([true.path], check=True)
    assert (echo.calls(), true.calls()) == (1, 2)
    assert count_calls(log) == {"echo": 1, "true": 2}


def test_server_config_keeps_token_auth_and_merges_a_modules_sections():
    from sgtest.server import server_config

    config = server_config({"ServerApp": {"root_dir": "/srv"}, "DemoCatalog": {"user": "alice"}})
    assert config.ServerApp.allow_unauthenticated_access is False
    assert config.ServerApp.jpserver_extensions == {"science_gateway.jupyter_ext": True}
    assert config.ServerApp.root_dir == "/srv" and config.DemoCatalog.user == "alice"
    assert server_config().ServerApp.allow_unauthenticated_access is False
    with pytest.raises(TypeError, match="must be a dict of traits"):
        server_config({"DemoCatalog": "alice"})


async def test_the_shared_jupyter_server_refuses_requests_without_the_token(jp_fetch, jp_serverapp):
    from tornado.httpclient import AsyncHTTPClient, HTTPClientError

    assert (await jp_fetch("gateway", "api", "")).code == 200  # jp_fetch sends the server's token
    with pytest.raises(HTTPClientError) as refused:
        await AsyncHTTPClient().fetch(f"{jp_serverapp.connection_url.rstrip('/')}/gateway/api/datasets")
    assert refused.value.code == 403


def test_wait_for_returns_the_value_and_says_what_it_waited_for():
    from sgtest.hub import wait_for

    answers = iter([None, OSError("connection refused"), "up"])

    def probe():
        value = next(answers)
        if isinstance(value, Exception):
            raise value
        return value

    assert wait_for(probe, 60, interval=0) == "up"
    with pytest.raises(TimeoutError, match=r"waiting for the hub \(last error: connection refused\)"):
        wait_for(lambda: (_ for _ in ()).throw(OSError("connection refused")), 0, what="the hub")


async def test_async_wait_for_awaits_coroutine_predicates():
    from sgtest.hub import async_wait_for

    calls = []

    async def ready():
        calls.append(1)
        return len(calls) >= 3 and "ready"

    assert await async_wait_for(ready, 60, interval=0) == "ready"
    assert await async_wait_for(lambda: 42, 60) == 42
    with pytest.raises(TimeoutError, match="waiting for nothing"):
        await async_wait_for(lambda: False, 0, what="nothing")


def test_logging_basic_config_is_caught_and_undone():
    import logging

    before = process_globals()
    handler = logging.StreamHandler()
    logging.getLogger().addHandler(handler)
    try:
        with pytest.raises(pytest.fail.Exception, match="the root logger changed"):
            check_globals_restored(before, "this test")
        assert handler not in logging.getLogger().handlers
    finally:
        logging.getLogger().removeHandler(handler)


def test_the_fault_proxy_forwards_fails_refuses_hangs_and_cuts_kept_alive_connections():
    import http.server
    import threading

    import requests

    from sgtest.fault_proxy import FaultProxy

    class Upstream(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            body = b"upstream"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    upstream = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with FaultProxy(upstream) as proxy, requests.Session() as kept_alive:
            assert proxy.route(f"{upstream}/a?b=1") == f"{proxy.url}/a?b=1"
            assert kept_alive.get(proxy.url, timeout=5).text == "upstream"
            proxy.http_error(500)
            r = kept_alive.get(proxy.url, timeout=5)  # the kept-alive connection meets the fault too
            assert r.status_code == 500 and "<h1>Internal Server Error</h1>" in r.text
            proxy.down()
            with pytest.raises(requests.ConnectionError):
                requests.get(proxy.url, timeout=5)
            proxy.hang()
            with pytest.raises(requests.Timeout):
                requests.get(proxy.url, timeout=0.5)
            proxy.pass_through()
            assert requests.get(proxy.url, timeout=5).text == "upstream"
            assert proxy.counts["pass"] >= 2 and proxy.counts["errors_answered"] == 1 and proxy.counts["hang"] == 1
            with pytest.raises(ValueError, match="not on the proxied service"):
                proxy.route("http://elsewhere.invalid/x")
    finally:
        server.shutdown()
        server.server_close()
