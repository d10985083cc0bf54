"""Rucio failing under a user's running server: 500s, then unreachable, then back (issue 18).

The user's server is a real Jupyter Server with the gateway extension and the Rucio backend; its
Rucio is the REAL shared Rucio service behind a fault proxy of the test's own
(:class:`sgtest.fault_proxy.FaultProxy`): the shared server is never touched. Rucio's transfer
daemons (sgtest.rucio_transfers) keep working on the database directly meanwhile, so the stage-in
goes on during the outage, as it would when only the REST front of Rucio fails.

While Rucio fails, the REST API and the staging monitor widget show the last status Rucio gave
with a notice that says why it is not fresh (never a 500, a traceback, or "failed"); staging
something new is a clear 503; a kernel waiting on the request keeps waiting. Once Rucio answers
again the status catches up by itself (the request is ready, with its paths).

The outage lasts ``SG_FAULT_OUTAGE_SECONDS`` (default 15 s, a shortened "minute": the backend's
behaviour does not depend on its length, only on spanning many status refreshes and the
rucio-clients retries, which it does at ``status_refresh_seconds=0``).
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest
from tornado.httpclient import HTTPClientError

from science_gateway.catalog import Catalog
from science_gateway.widgets import StagingMonitor
from sgtest import rucio_transfers as rt
from sgtest.fault_proxy import FaultProxy
from sgtest.rucio_transfers import rucio  # noqa: F401 (the fixture)

pytestmark = pytest.mark.rucio

OUTAGE_SECONDS = float(os.environ.get("SG_FAULT_OUTAGE_SECONDS", "15"))


@pytest.fixture(scope="module")
def proxy(rucio):
    with FaultProxy(rucio["RUCIO_URL"]) as running:
        yield running


@pytest.fixture
def gateway_config(rucio, proxy):
    # every call of the user's server to Rucio (auth included) goes through the proxy
    return {
        "GatewayExtension": {"catalog_class": "science_gateway.jupyter_ext.catalog.rucio.RucioCatalog"},
        "RucioCatalog": rt.backend_config(rucio, rucio_host=proxy.url, auth_host=proxy.url, timeout=10),
    }


async def test_rucio_500s_then_unreachable_lose_nothing_and_say_so(rucio, proxy, jp_fetch, jp_auth_header,
                                                                   http_server_client, jp_base_url):
    admin = rt.client(rucio)

    async def fetch(method, *parts, body=None):
        kwargs = {"body": json.dumps(body)} if body is not None else {}
        try:
            r = await jp_fetch("gateway", "api", *parts, method=method, **kwargs)
        except HTTPClientError as e:
            return e.code, json.loads(e.response.body)
        return r.code, json.loads(r.body) if r.body else None

    api = Catalog(url=http_server_client.get_url(jp_base_url), token=jp_auth_header["Authorization"].split()[1])
    monitor = StagingMonitor(api, autostart=False)

    def monitor_text() -> str:
        """What the monitor shows above the requests, and on this request's row."""
        row = monitor._rows[request["id"]]
        return f"{monitor.error.value} {row.title.value} {row.failed.value}"

    _, staged = await asyncio.to_thread(rt.staged_in_progress, admin, rucio, api)
    # -- Rucio answers every call with HTTP 500 (no Rucio error body) ----------------------------
    proxy.http_error(500)
    request = staged.to_dict()
    assert staged.notice == ""
    waiter = asyncio.ensure_future(api.wait_async(request["id"], timeout=300, interval=0.5))

    def assert_kept(answer, words):
        """The request as Rucio last gave it, with a notice that says why: never lost, never failed."""
        mine = [r for r in answer["requests"] if r["id"] == request["id"]]
        assert mine and mine[0]["state"] == "in_progress" and mine[0]["files_done"] == staged.files_done, answer
        assert words in answer["notice"] and "not updated since" in answer["notice"], answer["notice"]
        assert mine[0]["notice"] == answer["notice"] and "Traceback" not in answer["notice"]

    code, answer = await fetch("GET", "requests")
    assert code == 200, answer
    assert_kept(answer, "HTTP 500")
    code, one = await fetch("GET", "requests", request["id"])
    assert code == 200 and one["state"] == "in_progress" and "HTTP 500" in one["notice"]
    await asyncio.to_thread(monitor.refresh)
    assert "sg-notice" in monitor.error.value and "sg-error" not in monitor.error.value
    assert "HTTP 500" in monitor_text() and f"recalling from tape ({staged.files_done} of 4 files)" in monitor_text()
    assert "stuck" not in monitor_text() and "failed" not in monitor_text()
    other = rt.make_dataset(admin, rucio, n_files=1)
    for method, parts, body in [("POST", ["requests"], {"did": other}), ("GET", ["datasets"], None)]:
        code, error = await fetch(method, *parts, body=body)
        assert code == 503 and "HTTP 500" in error["message"] and "try again later" in error["message"], error
        assert "Traceback" not in json.dumps(error)
    assert proxy.counts["errors_answered"] >= 3

    # -- then Rucio unreachable (connection refused) while the copies go on ------------------------
    proxy.down()
    start, answers = time.monotonic(), 0
    copies = asyncio.ensure_future(rt.transfer_round(rucio))  # every file copied while Rucio's front is away
    notices = set()
    while time.monotonic() - start < OUTAGE_SECONDS or not copies.done():
        code, answer = await fetch("GET", "requests")
        assert code == 200, answer
        assert_kept(answer, "Rucio")  # the last failure's reason: the 500s at first, then this one
        notices.add(answer["notice"].split(": ", 1)[1])
        answers += 1
        await asyncio.sleep(0.5)
    await copies
    assert any("cannot reach Rucio" in n for n in notices), notices
    outage = time.monotonic() - start
    await asyncio.to_thread(monitor.refresh)
    assert "cannot reach Rucio" in monitor_text() and "sg-error" not in monitor.error.value
    code, error = await fetch("POST", "requests", body={"did": other})
    assert code == 503 and "cannot reach Rucio" in error["message"]
    assert not waiter.done(), "the kernel's wait ended during the outage"

    # -- Rucio back: the status catches up by itself ---------------------------------------------
    proxy.pass_through()
    back = time.monotonic()
    while True:
        code, current = await fetch("GET", "requests", request["id"])
        assert code == 200
        if current["state"] == "ready" and not current["notice"]:
            break
        assert current["state"] == "in_progress", current
        assert time.monotonic() - back < 60, f"the status did not catch up: {current}"
        await asyncio.sleep(0.5)
    caught_up = time.monotonic() - back
    assert len(current["paths"]) == 4 and all(os.path.exists(p) for p in current["paths"])
    done = await asyncio.wait_for(waiter, 60)
    assert done.state == "ready" and done.id == request["id"]
    await asyncio.to_thread(monitor.refresh)
    assert monitor.error.value == "" and "ready" in monitor_text()
    print(f"{answers} status answers during a {outage:.0f}s outage; caught up {caught_up:.1f}s after Rucio came back")
    code, _ = await fetch("DELETE", "requests", request["id"])
    assert code == 204
