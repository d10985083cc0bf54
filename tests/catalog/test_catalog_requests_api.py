"""Stage-in through the REST API of a real Jupyter Server (pytest_jupyter), with the demo backend.

Also: the OpenAPI file and the routes agree, unauthenticated calls are refused, bad input is a
4xx in the one JSON error shape and creates or loses nothing, and the notebook Python API
(``science_gateway.catalog``) works against the same server.
"""

import asyncio
import json
import os
import re
from importlib.resources import files

import pytest
import yaml
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from science_gateway import catalog as notebook_catalog
from science_gateway.jupyter_ext.catalog.demo import DemoCatalog
from science_gateway.jupyter_ext.handlers import handlers
from science_gateway.dask.server import handlers as dask_handlers
from sgtest.hub import async_wait_for
from sgtest.rucio_fakes import raising_catalog, rucio_exception



@pytest.fixture
def state_dir(tmp_path):
    return tmp_path / "state"


@pytest.fixture
def gateway_config(state_dir):
    return {
        "DemoCatalog": {
            "user": "alice",
            "state_dir": str(state_dir / "alice"),
            "tape_recall_seconds": 0.5,
            "quota_bytes": 30000,
        },
    }


async def call(jp_fetch, method, *parts, body=None, raw=None, **kwargs):
    if body is not None:
        kwargs["body"] = json.dumps(body)
    if raw is not None:
        kwargs["body"] = raw
    r = await jp_fetch("gateway", "api", *parts, method=method, **kwargs)
    return r.code, (json.loads(r.body) if r.body else None)


async def error_answer(jp_fetch, method, *parts, body=None, raw=None, **kwargs):
    with pytest.raises(HTTPClientError) as e:
        await call(jp_fetch, method, *parts, body=body, raw=raw, **kwargs)
    payload = json.loads(e.value.response.body)
    assert set(payload) >= {"message", "reason"}, payload
    assert len(payload["message"]) < 500, payload["message"][:500]
    return e.value.code, payload["message"]


async def test_stage_progress_paths_and_cancel(jp_fetch):
    code, request = await call(jp_fetch, "POST", "requests", body={"did": "demo:run2024.raw.0002"})
    assert code == 201 and request["tape_recall"] and request["state"] == "in_progress"
    code, again = await call(jp_fetch, "POST", "requests", body={"did": "demo:run2024.raw.0002"})
    assert code == 200 and again["reused"] and again["id"] == request["id"]
    async def ready():
        _, current = await call(jp_fetch, "GET", "requests", request["id"])
        return current if current["state"] == "ready" else None

    current = await async_wait_for(ready, 60, interval=0.05, what="the staging request to be ready")
    assert current["files_done"] == current["files_total"] == 4
    _, paths = await call(jp_fetch, "GET", "requests", request["id"], "paths")
    assert paths["paths"] == current["paths"] and len(paths["paths"]) == 4
    for path in paths["paths"]:
        with open(path) as f:
            assert f.read()
    _, listed = await call(jp_fetch, "GET", "requests")
    assert [r["id"] for r in listed["requests"]] == [request["id"]]
    code, _ = await call(jp_fetch, "DELETE", "requests", request["id"])
    assert code == 204
    assert (await call(jp_fetch, "GET", "requests"))[1]["requests"] == []


@pytest.mark.parametrize(
    "method, parts, kwargs, status, message",
    [
        ("POST", ["requests"], {"body": {"did": "demo:../../etc/passwd"}}, 400, "no '..'"),
        ("POST", ["requests"], {"body": {"did": "no-colon"}}, 400, "scope:name"),
        ("POST", ["requests"], {"body": {"dataset": "x"}}, 400, "body must be JSON"),
        ("POST", ["requests"], {"body": {"did": "demo:no.such.dataset"}}, 404, "no dataset"),
        ("GET", ["requests", "..%2F..%2Fetc"], {}, 400, "request id"),
        ("GET", ["requests", "0123456789abcdef"], {}, 404, "of yours"),
        ("DELETE", ["requests", "0123456789abcdef"], {}, 404, "of yours"),
        ("GET", ["datasets"], {"params": {"limit": "100000000"}}, 400, "limit must be between"),
        ("GET", ["datasets"], {"params": {"pattern": "../*"}}, 400, "name pattern"),
        ("GET", ["datasets"], {"params": {"page": "abc"}}, 400, "page token"),
        ("GET", ["datasets", "demo:a..b", "files"], {}, 400, "no '..'"),
        # int() takes '\u00b2'.isdigit() strings and other scripts' digits: none may become a 500
        ("GET", ["datasets"], {"params": {"page": "\u00b2"}}, 400, "page token"),
        ("GET", ["datasets"], {"params": {"page": "\u0663"}}, 400, "page token"),
        ("GET", ["datasets"], {"params": {"limit": "\u00b2"}}, 400, "whole number"),
        ("GET", ["datasets"], {"params": {"limit": "\uff13"}}, 400, "whole number"),
        ("GET", ["datasets"], {"params": {"limit": "-1"}}, 400, "whole number"),
        ("GET", ["datasets"], {"params": {"details": ""}}, 400, "details must be true or false"),
        ("GET", ["datasets"], {"params": {"details": "maybe" * 1000}}, 400, "details must be true or false"),
        ("GET", ["datasets"], {"params": {"details": "\u00b2"}}, 400, "details must be true or false"),
        ("GET", ["datasets"], {"params": {"filters": "a=b," * 2000}}, 400, "at most 4096"),
        ("POST", ["requests"], {"raw": "[" * 30000 + "]" * 30000}, 400, "not JSON"),
        ("POST", ["requests"], {"raw": "[]"}, 400, "not an object"),
        ("POST", ["requests"], {"raw": '"demo:run2024.raw.0001"'}, 400, "not an object"),
        ("POST", ["requests"], {"raw": "null"}, 400, "not an object"),
        ("POST", ["requests"], {"raw": "5"}, 400, "not an object"),
        ("POST", ["requests"], {"raw": b"\xff\xfe"}, 400, "not JSON"),
        ("POST", ["requests"], {"body": {"did": ["demo:run2024.raw.0001"]}}, 400, "not text"),
        ("POST", ["requests"], {"body": {"did": None}}, 400, "not text"),
        ("POST", ["requests"], {"body": {"did": "demo:run2024.raw.0001", "force": True}}, 400, "unknown key 'force'"),
        ("POST", ["requests"], {"raw": json.dumps({"did": "demo:" + "a" * 200_000})}, 413, "at most 65536"),
    ],
    ids=[
        "traversal-did", "malformed-did", "no-did", "unknown-dataset", "traversal-request-id",
        "unknown-request", "cancel-unknown", "huge-page", "traversal-pattern", "bad-page-token", "traversal-files",
        "page-superscript", "page-arabic-digit", "limit-superscript", "limit-fullwidth", "limit-negative",
        "details-empty", "details-long", "details-superscript", "filters-long", "nested-json", "list-body",
        "string-body", "null-body", "number-body", "not-utf8", "did-list", "did-null", "unknown-key", "body-too-large",
    ],
)
async def test_bad_input_is_a_clear_4xx_and_creates_nothing(jp_fetch, state_dir, method, parts, kwargs, status, message):
    code, text = await error_answer(jp_fetch, method, *parts, **kwargs)
    assert code == status and message in text, text
    assert (await call(jp_fetch, "GET", "requests"))[1]["requests"] == []
    assert not (state_dir / "alice" / "data").exists()


@pytest.mark.parametrize(
    "raw, status",
    [
        (json.dumps({"did": "demo:" + "a" * 10 * 2**20}), 413),  # 10 MB: refused by size
        (json.dumps({"did": "demo:" + "a%s" * 20000}), 400),  # under the limit: refused by the grammar
        (json.dumps({"did": "%s%d:" + "b" * 50000}), 400),
    ],
    ids=["10MB-did", "60kB-did-with-percent", "60kB-scope"],
)
async def test_a_huge_did_gets_a_short_answer_and_short_log_lines(jp_fetch, caplog, raw, status):
    caplog.set_level("DEBUG")
    for logger in ("ServerApp", "tornado.access", "tornado.general", "tornado.application"):
        import logging

        logging.getLogger(logger).propagate = True
    code, text = await error_answer(jp_fetch, "POST", "requests", raw=raw)
    assert code == status and len(text) < 300, text[:300]
    lines = [r.getMessage() for r in caplog.records]
    assert any(f"{status} POST" in line for line in lines), lines  # the log was captured at all
    assert max(len(line) for line in lines) < 1000, max(lines, key=len)[:300]
    huge = re.compile(r"a{100}|(a%s){50}|b{100}")
    assert not any(huge.search(line) for line in lines)


async def test_a_long_url_is_refused_and_logged_short(jp_fetch, caplog):
    caplog.set_level("DEBUG")
    code, text = await error_answer(jp_fetch, "GET", "datasets", params={"pattern": "x" * 40000})
    assert code == 414 and "at most 16384" in text
    code, text = await error_answer(
        jp_fetch, "GET", "datasets", params={"pattern": "../*"}, headers={"Referer": "http://h/" + "y" * 30000}
    )
    assert code == 400
    lines = [r.getMessage() for r in caplog.records]
    assert any("414 GET" in line for line in lines) and any("400 GET" in line for line in lines), lines
    assert not any("x" * 300 in line or "y" * 300 in line for line in lines)


async def test_a_browser_without_credentials_is_sent_to_the_login(http_server_client, jp_base_url):
    client = AsyncHTTPClient()
    url = http_server_client.get_url(f"{jp_base_url}gateway/api/datasets?pattern=run2024*")
    with pytest.raises(HTTPClientError) as e:
        await client.fetch(url, headers={"Accept": "text/html,application/xhtml+xml"}, follow_redirects=False)
    assert e.value.code == 302 and "login" in e.value.response.headers["Location"]
    with pytest.raises(HTTPClientError) as e:
        await client.fetch(url, follow_redirects=False)  # a script: a message saying how to log in
    assert e.value.code == 403
    message = json.loads(e.value.response.body)["message"]
    assert "not logged in" in message and "Authorization: token" in message


@pytest.mark.parametrize(
    "error, status, words",
    [
        (rucio_exception("AccessDenied", "Account alice can not list files"), 403, "does not let account"),
        (rucio_exception("CannotAuthenticate", "no"), 401, "credentials"),
        (rucio_exception("UnsupportedOperation", "z" * 100000), 502, "the catalogue answered"),
        (KeyError("bytes"), 502, "did not understand"),
    ],
    ids=["access-denied", "cannot-authenticate", "unexpected-rucio-error", "unexpected-error"],
)
async def test_catalogue_errors_keep_their_status_through_the_api(jp_fetch, jp_serverapp, tmp_path, error, status, words):
    ext = next(iter(jp_serverapp.extension_manager.extension_apps["science_gateway.jupyter_ext"]))
    ext.catalog = raising_catalog(str(tmp_path), error)
    try:
        code, text = await error_answer(jp_fetch, "GET", "datasets", "astro:run2024.raw.0001", "files")
    finally:
        await ext.catalog.close()
    assert code == status and words in text and "Traceback" not in text, text[:300]


async def test_a_5xx_logs_short_headers(jp_fetch, jp_serverapp, tmp_path, caplog):
    caplog.set_level("DEBUG")
    ext = next(iter(jp_serverapp.extension_manager.extension_apps["science_gateway.jupyter_ext"]))
    ext.catalog = raising_catalog(str(tmp_path), rucio_exception("ServiceUnavailable", "down"))
    try:
        code, _ = await error_answer(
            jp_fetch, "GET", "datasets", "astro:x", "files", headers={"User-Agent": "u" * 30000}
        )
    finally:
        await ext.catalog.close()
    lines = [r.getMessage() for r in caplog.records]
    assert code == 503 and any("503 GET" in line for line in lines), lines
    assert not any("u" * 300 in line for line in lines)


async def test_unknown_scope_is_refused_by_policy(jp_fetch, jp_serverapp):
    # the policy's scopes, as a deployment configures them (c.DemoCatalog.allowed_scopes)
    ext = next(iter(jp_serverapp.extension_manager.extension_apps["science_gateway.jupyter_ext"]))
    ext.catalog.allowed_scopes = ["demo"]
    code, text = await error_answer(jp_fetch, "GET", "datasets", params={"scope": "private"})
    assert code == 403 and "allowed: demo" in text
    code, text = await error_answer(jp_fetch, "POST", "requests", body={"did": "private:run2024.raw.0001"})
    assert code == 403 and "allowed: demo" in text
    assert (await call(jp_fetch, "GET", "requests"))[1]["requests"] == []


async def test_another_users_request_is_invisible_and_untouched(jp_fetch, state_dir):
    bob = DemoCatalog(user="bob", state_dir=str(state_dir / "bob"))
    bobs = await bob.stage("demo:run2024.calib.0001")
    for method, parts in [("GET", ["requests", bobs.id]), ("GET", ["requests", bobs.id, "paths"]), ("DELETE", ["requests", bobs.id])]:
        code, text = await error_answer(jp_fetch, method, *parts)
        assert code == 404 and "of yours" in text
    assert (await bob.get_request(bobs.id)).state == "ready"
    assert all(os.path.exists(p) for p in bobs.paths)


async def test_quota_is_checked_before_anything_is_created(jp_fetch, state_dir):
    code, _ = await call(jp_fetch, "POST", "requests", body={"did": "demo:run2024.raw.0001"})
    assert code == 201
    code, _ = await call(jp_fetch, "POST", "requests", body={"did": "demo:run2024.raw.0002"})
    assert code == 201
    code, text = await error_answer(jp_fetch, "POST", "requests", body={"did": "demo:run2023.raw.0007"})
    assert code == 409 and "quota" in text and "cancel requests" in text
    assert len((await call(jp_fetch, "GET", "requests"))[1]["requests"]) == 2


async def test_every_verb_refuses_unauthenticated_calls(http_server_client, jp_base_url):
    client = AsyncHTTPClient()
    base = http_server_client.get_url(f"{jp_base_url}gateway/api")
    for method, path, body in [
        ("GET", "/", None), ("GET", "/datasets", None), ("GET", "/datasets/demo:x/files", None),
        ("GET", "/requests", None), ("POST", "/requests", '{"did": "demo:run2024.raw.0001"}'),
        ("GET", "/requests/abc", None), ("DELETE", "/requests/abc", None), ("GET", "/requests/abc/paths", None),
    ]:
        with pytest.raises(HTTPClientError) as e:
            await client.fetch(base + path, method=method, body=body, follow_redirects=False)
        assert e.value.code in (401, 403), (method, path, e.value.code)


def _spec_path(route: str) -> str:
    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", route)
    return "/" if path == "/?" else path


def test_openapi_file_and_routes_agree():
    spec = yaml.safe_load((files("science_gateway.jupyter_ext") / "openapi.yaml").read_text())
    routes = {}
    for route, handler in handlers + dask_handlers:
        verbs = {m for m in ("get", "post", "put", "patch", "delete") if m in vars(handler)}
        routes[_spec_path(route)] = verbs
    described = {path: {m for m in ops if m in ("get", "post", "put", "patch", "delete")} for path, ops in spec["paths"].items()}
    assert routes == described
    for path, ops in spec["paths"].items():
        for verb, op in ops.items():
            assert "403" in op["responses"] or verb == "get" and path == "/", (path, verb)


async def test_notebook_python_api_against_the_server(jp_serverapp, http_server_client, jp_base_url):
    api = notebook_catalog.Catalog(
        url=http_server_client.get_url(jp_base_url), token=jp_serverapp.identity_provider.token
    )
    page = await api.search_async("run2024*", filters={"datatype": "RAW"})
    assert [d.did for d in page.datasets] == ["demo:run2024.raw.0001", "demo:run2024.raw.0002"]
    request = await api.stage_async("demo:run2024.raw.0002")
    seen = []
    done = await api.wait_async(request, timeout=30, interval=0.05, on_progress=lambda r: seen.append(r.files_done))
    assert done.state == "ready" and seen == sorted(seen) and seen[-1] == 4
    assert await api.paths_async(done) == done.paths
    # the synchronous API, run in a thread because this test's loop serves the server
    assert [r.id for r in await asyncio.to_thread(api.requests)] == [request.id]
    with pytest.raises(notebook_catalog.CatalogAPIError) as e:
        await asyncio.to_thread(api.stage, "demo:../x")
    assert e.value.status == 400 and "no '..'" in e.value.message
    await api.cancel_async(request)
    assert await api.requests_async() == []


def test_python_api_finds_the_server_from_the_jupyterhub_env(monkeypatch):
    monkeypatch.delenv("SCIENCE_GATEWAY_API_URL", raising=False)
    monkeypatch.setenv("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:12345/user/alice/")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "secret")
    api = notebook_catalog.Catalog()
    assert api.url == "http://127.0.0.1:12345/user/alice/gateway/api" and api.token == "secret"
    monkeypatch.delenv("JUPYTERHUB_SERVICE_URL")
    with pytest.raises(RuntimeError, match="SCIENCE_GATEWAY_API_URL"):
        notebook_catalog.Catalog()
