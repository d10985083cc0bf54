"""Pure builders of the catalogue backends, and the demo backend's stage-in, with plain asserts."""

import asyncio
import datetime
import os

import pytest
from traitlets.config import Config

from science_gateway.core.catalog import InvalidQuery, QuotaExceeded, ScopeNotAllowed
from science_gateway.jupyter_ext.catalog.base import CatalogBackend
from science_gateway.jupyter_ext.catalog.demo import DemoCatalog
from science_gateway.core.catalog import (
    FAILED,
    IN_PROGRESS,
    READY,
    FailedFile,
    InvalidDID,
    StageRequest,
    check_request_id,
)
from science_gateway.jupyter_ext.catalog.rucio import (
    TAPE_MARK,
    RucioCatalog,
    dataset_from_rucio,
    decode_page,
    deterministic_path,
    encode_page,
    pfn_to_path,
    request_from_rule,
    rucio_filters,
)

from sgtest.rucio_fakes import raising_catalog, rucio_exception

PREFIX = "file://localhost/storage/disk/"


@pytest.mark.parametrize(
    "pfn, expected",
    [
        (PREFIX + "astro/ab/cd/f.csv", "/mnt/astro/ab/cd/f.csv"),
        (PREFIX + "astro/../../etc/passwd", None),
        (PREFIX + "../x", None),
        (PREFIX + "astro//f", None),
        (PREFIX + "./f", None),
        ("file://localhost/elsewhere/astro/f.csv", None),
        ("root://other.org//storage/disk/astro/f.csv", None),
        (PREFIX, None),
    ],
    ids=["inside", "dotdot-deep", "dotdot", "empty-part", "dot", "other-prefix", "other-host", "prefix-only"],
)
def test_pfn_to_path_stays_inside_the_mount(pfn, expected, tmp_path):
    assert pfn_to_path(pfn, PREFIX, "/mnt") == expected


def test_pfn_to_path_refuses_a_symlink_out_of_the_mount(tmp_path):
    mount = tmp_path / "mnt"
    (mount / "astro").mkdir(parents=True)
    (mount / "astro" / "escape").symlink_to("/etc")
    assert pfn_to_path(PREFIX + "astro/escape/passwd", PREFIX, str(mount)) is None
    assert pfn_to_path(PREFIX + "astro/f.csv", PREFIX, str(mount)) == str(mount / "astro" / "f.csv")


@pytest.mark.parametrize(
    "scope, name, algorithm, expected",
    [
        ("astro", "run2024.raw.0002.part000.csv", "hash", "astro/ad/cd/run2024.raw.0002.part000.csv"),
        ("user.alice", "f.csv", "identity", "user/alice/f.csv"),
        ("astro", "f.csv", "identity", "astro/f.csv"),
    ],
    ids=["hash-as-rucio-writes-it", "identity-user-scope", "identity"],
)
def test_deterministic_path(scope, name, algorithm, expected):
    assert deterministic_path(scope, name, algorithm) == expected


@pytest.mark.parametrize(
    "token, n_scopes, expected",
    [(None, 1, (0, 0)), (encode_page(1, 50), 2, (1, 50))],
    ids=["first", "second-scope"],
)
def test_page_tokens_round_trip(token, n_scopes, expected):
    assert decode_page(token, n_scopes, 10000) == expected


@pytest.mark.parametrize("token", ["x", "5.0", "0.-1", "0.99999999"], ids=["junk", "scope-out-of-range", "negative", "too-deep"])
def test_bad_page_tokens_are_refused(token):
    with pytest.raises(InvalidQuery):
        decode_page(token, 2, 10000)


def test_rucio_filter_is_the_pattern_and_the_metadata():
    query = RucioCatalog(allowed_scopes=["astro"]).query("run2024*", "project=run2024, datatype=RAW", 50)
    assert rucio_filters(query) == {"name": "run2024*", "project": "run2024", "datatype": "RAW"}


def test_scope_in_the_pattern_and_scope_policy():
    catalog = RucioCatalog(config=Config({"RucioCatalog": {"allowed_scopes": ["astro"]}}))
    assert catalog.query("astro:run*").scope == "astro"
    with pytest.raises(ScopeNotAllowed, match="allowed: astro"):
        catalog.query("private:run*")
    with pytest.raises(ScopeNotAllowed):
        catalog.check_did("private:secret")
    with pytest.raises(InvalidQuery):
        catalog.query("*", scope="bad scope!")


def _rule(state, ok, repl, stuck, comments="science-gateway", error=None):
    return {
        "id": "r1", "scope": "astro", "name": "ds", "state": state, "locks_ok_cnt": ok,
        "locks_replicating_cnt": repl, "locks_stuck_cnt": stuck, "comments": comments, "error": error,
        "bytes": 300, "created_at": datetime.datetime(2026, 1, 1), "expires_at": None,
    }


@pytest.mark.parametrize(
    "rule, state, counts, message",
    [
        (_rule("REPLICATING", 0, 3, 0, comments=f"x; {TAPE_MARK}"), IN_PROGRESS, (0, 3, 0), "recalling from tape: 0 of 3"),
        (_rule("REPLICATING", 2, 1, 0), IN_PROGRESS, (2, 1, 0), "copying: 2 of 3"),
        (_rule("OK", 3, 0, 0), READY, (3, 0, 0), "ready: 3 of 3"),
        (_rule("STUCK", 2, 0, 1, error="copy failed: No such file"), FAILED, (2, 0, 1), "copy failed: No such file"),
        (_rule("STUCK", 1, 1, 1), IN_PROGRESS, (1, 1, 1), "1 failed"),
    ],
    ids=["tape-recall", "copying", "ok", "stuck", "stuck-but-still-moving"],
)
def test_request_from_rule(rule, state, counts, message):
    request = request_from_rule(rule, [{"scope": "astro", "name": f"f{i}", "bytes": 100} for i in range(3)], [], [])
    assert request.state == state
    assert (request.files_done, request.files_in_flight, request.files_failed) == counts
    assert message in request.message
    assert request.did == "astro:ds"
    if state == FAILED:
        assert request.failed and request.failed[0].reason == "copy failed: No such file"


def test_dataset_from_rucio_availability_and_metadata():
    did = {"scope": "astro", "name": "ds", "bytes": None, "length": None}
    meta = {"bytes": 10, "length": 2, "project": "run2024", "target": "crab", "created_at": datetime.datetime(2026, 1, 1), "guid": None}
    types = {"SG-TAPE": "TAPE", "SG-DISK": "DISK"}
    on_tape = dataset_from_rucio(did, meta, [{"rse": "SG-TAPE", "state": "AVAILABLE"}], types)
    assert (on_tape.availability, on_tape.bytes, on_tape.files) == ("tape", 10, 2)
    assert on_tape.metadata == {"project": "run2024", "target": "crab"}
    both = dataset_from_rucio(did, meta, [{"rse": "SG-TAPE", "state": "AVAILABLE"}, {"rse": "SG-DISK", "state": "AVAILABLE"}], types)
    assert both.availability == "disk"
    assert dataset_from_rucio(did, meta, [], types).availability == "unknown"
    # after a free-form filter and before the DID columns: the sizes a dataset replica counts
    replica = {"rse": "SG-TAPE", "state": "AVAILABLE", "bytes": 30, "length": 3}
    early = dataset_from_rucio(did, {"target": "crab"}, [replica], types)
    assert (early.bytes, early.files, early.availability) == (30, 3, "tape")


def test_details_metadata_merges_as_rucio_plugin_all_does():
    from science_gateway.jupyter_ext.catalog.rucio import matched_metadata, merged_metadata

    filters = {"target": "crab", "run_number.gte": "5"}
    assert matched_metadata(filters) == {"target": "crab"}  # an operator says nothing exact
    columns = {"project": "run2024", "datatype": "RAW", "bytes": 10}
    # before the free-form plugin answers: the DID columns and what the filter matched
    assert merged_metadata(filters, columns, None) == {"target": "crab", **columns}
    # then the free-form plugin's keys, over the DID columns (Rucio's plugin=ALL order)
    assert merged_metadata(filters, columns, {"target": "crab", "project": "p2"}) == {**columns, "target": "crab", "project": "p2"}


@pytest.mark.parametrize("request_id", ["../etc", "a" * 65, "", "x y", "r1/paths"], ids=["dotdot", "long", "empty", "space", "slash"])
def test_bad_request_ids(request_id):
    with pytest.raises(InvalidDID):
        check_request_id(request_id)


def test_stage_request_round_trips_through_json():
    request = StageRequest(id="r1", did="a:b", state=FAILED, failed=[FailedFile("a:f", "gone")], paths=["/x"])
    assert StageRequest.from_dict(request.to_dict()) == request


# -- the demo backend's stage-in -----------------------------------------------------------------


class Clock:
    def __init__(self):
        self.t = 1_000_000.0

    def __call__(self):
        return self.t


@pytest.fixture
def demo(tmp_path):
    clock = Clock()
    catalog = DemoCatalog(user="alice", state_dir=str(tmp_path / "alice"), tape_recall_seconds=4.0)
    catalog.now = clock
    catalog.clock = clock
    return catalog


async def test_demo_stage_of_a_disk_dataset_is_ready_with_real_files(demo):
    request = await demo.stage("demo:run2024.raw.0001")
    assert request.state == READY and request.files_done == request.files_total == 3
    for path in request.paths:
        with open(path) as f:
            assert f.read()
    assert all(p.startswith(demo.state_dir) for p in request.paths)


async def test_demo_tape_dataset_recalls_file_by_file(demo):
    request = await demo.stage("demo:run2024.raw.0002")
    assert request.tape_recall and request.state == IN_PROGRESS and request.files_done == 0
    assert "recalling from tape" in request.message
    seen = []
    for _ in range(4):
        demo.clock.t += 1.0
        current = await demo.get_request(request.id)
        seen.append(current.files_done)
        assert len(current.paths) == current.files_done
    assert seen == [1, 2, 3, 4]
    assert current.state == READY


async def test_demo_requests_outlive_the_backend_and_staging_again_reuses(demo, tmp_path):
    first = await demo.stage("demo:run2024.raw.0001")
    again = DemoCatalog(user="alice", state_dir=demo.state_dir)
    reused = await again.stage("demo:run2024.raw.0001")
    assert reused.id == first.id and reused.reused
    assert [r.id for r in await again.status()] == [first.id]


async def test_demo_cancel_and_other_users(demo, tmp_path):
    bob = DemoCatalog(user="bob", state_dir=str(tmp_path / "bob"))
    bobs = await bob.stage("demo:run2024.calib.0001")
    assert await demo.get_request(bobs.id) is None
    assert await demo.cancel(bobs.id) is False
    assert (await bob.get_request(bobs.id)) is not None
    mine = await demo.stage("demo:run2024.calib.0001")
    assert await demo.cancel(mine.id) is True
    assert await demo.status() == []
    assert not any(os.path.exists(p) for p in mine.paths)


async def test_demo_quota_is_checked_first(tmp_path):
    catalog = DemoCatalog(user="alice", state_dir=str(tmp_path / "alice"), quota_bytes=5000)
    with pytest.raises(QuotaExceeded, match="needs 9.6 kB"):
        await catalog.stage("demo:run2024.raw.0001")
    assert await catalog.status() == []
    assert not os.path.exists(tmp_path / "alice" / "data")


async def test_demo_unknown_dataset_and_bad_ids(demo):
    assert await demo.stage("demo:no.such.dataset") is None
    with pytest.raises(InvalidDID):
        await demo.stage("demo:../../etc")
    with pytest.raises(InvalidDID):
        await demo.get_request("../x")


def test_oidc_token_file_is_sent_and_reread_when_it_changes(tmp_path, monkeypatch):
    token_file = tmp_path / "bt_u1000"
    token_file.write_text("token-one\n")
    monkeypatch.setenv("BEARER_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    catalog = RucioCatalog(rucio_host="http://127.0.0.1:9", account="alice", rse="DISK", mount_path=str(tmp_path))
    assert catalog.auth_type == "oidc" and catalog.token_file == str(token_file)
    client = catalog._client()  # no call to Rucio: the token comes from the file
    assert client.headers["X-Rucio-Auth-Token"] == "token-one"
    token_file.write_text("token-two\n")
    os.utime(token_file, (1, 1))
    assert catalog._client().headers["X-Rucio-Auth-Token"] == "token-two"


async def test_an_unreachable_rucio_is_a_clear_503(tmp_path):
    from science_gateway.core.catalog import BackendUnavailable

    catalog = RucioCatalog(
        rucio_host="http://127.0.0.1:9", auth_type="userpass", account="alice", password="x",
        rse="DISK", mount_path=str(tmp_path), timeout=5, allowed_scopes=["astro"],
    )
    try:
        with pytest.raises(BackendUnavailable, match="Rucio") as e:
            await catalog.search(catalog.query("*", scope="astro"))
        assert e.value.status == 503
    finally:
        await catalog.close()


def test_rucio_date_is_rfc1123_whatever_the_locale():
    from science_gateway.jupyter_ext.catalog.rucio import rucio_date

    assert rucio_date(datetime.datetime(2026, 11, 22, 3, 4, 5)) == "Sun, 22 Nov 2026 03:04:05 UTC"


# -- the template methods: validation happens before any backend hook -------------------------


class _Recording(CatalogBackend):  # a minimal backend that records its hooks
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = []

    async def _search(self, query):
        self.calls.append(("search", query))
        from science_gateway.core.catalog import SearchPage

        return SearchPage([])

    async def _list_files(self, scope, name):
        self.calls.append(("list_files", scope, name))
        return []

    async def _stage(self, scope, name):
        self.calls.append(("stage", scope, name))

    async def _status(self):
        self.calls.append(("status",))
        return []

    async def _cancel(self, request_id):
        self.calls.append(("cancel", request_id))
        return False


# a trailing newline passed every grammar (``^...$`` matches before one) until they used fullmatch
HOSTILE_DIDS = ["demo:../../etc/passwd", "demo", "a:b:c", "private:x", "demo:" + "a" * 10**6, "demo:x\x00", 5, None,
                "demo:run2024.raw.0001\n", "demo\n:run2024.raw.0001"]


@pytest.mark.parametrize("did", HOSTILE_DIDS, ids=["dotdot", "no-colon", "two-colons", "other-scope", "huge", "nul", "int",
                                                   "none", "newline-after-name", "newline-after-scope"])
async def test_a_hostile_did_never_reaches_a_backend_hook(did):
    from science_gateway.core.catalog import CatalogError

    backend = _Recording(allowed_scopes=["demo"])
    for method in (backend.list_files, backend.stage):
        with pytest.raises(CatalogError) as e:
            await method(did)
        assert len(str(e.value)) < 300
    assert backend.calls == []


@pytest.mark.parametrize("request_id", ["../x", "", "a" * 65, "a b", "\u0663", None, "abc\n"],
                         ids=["dotdot", "empty", "long", "space", "arabic-digit", "none", "trailing-newline"])
async def test_a_hostile_request_id_never_reaches_a_backend_hook(request_id):
    backend = _Recording()
    for method in (backend.cancel, backend.get_request, backend.paths):
        with pytest.raises(InvalidDID):
            await method(request_id)
    assert backend.calls == []


@pytest.mark.parametrize(
    "raw",
    [
        {"pattern": "../*"},
        {"pattern": "private:*"},
        {"filters": "a=b; rm -rf /"},
        {"filters": {"k": ["v"]}},
        {"limit": "\u00b2"},
        {"limit": "\uff13"},
        {"limit": True},
        {"page": "\u00b2"},
        {"page": "x" * 201},
        {"details": "maybe"},
        {"details": None},
        {"pattern": "run2024*\n"},
        {"page": "abc\n"},
        {"scope": "demo\n"},
        {"partial": "maybe"},
    ],
    ids=["dotdot", "other-scope", "shell", "list-value", "superscript-limit", "fullwidth-limit", "bool-limit",
         "superscript-page", "long-page", "details-word", "details-none", "newline-pattern",
         "newline-page", "newline-scope", "partial-word"],
)
async def test_a_hostile_query_never_reaches_the_search_hook(raw):
    from science_gateway.core.catalog import CatalogError, SearchQuery

    backend = _Recording(allowed_scopes=["demo"])
    with pytest.raises(CatalogError):
        await backend.search(**raw)
    fields = {"pattern": "*", "filters": {}, "limit": 50, "page": None, "scope": None, "details": True, "partial": False}
    if not isinstance(raw.get("filters"), str):  # a hand-made SearchQuery is validated again
        with pytest.raises(CatalogError):
            await backend.search(SearchQuery(**{**fields, **raw}))
    assert backend.calls == []


async def test_a_valid_query_reaches_the_hook_validated():
    backend = _Recording(allowed_scopes=["demo"])
    await backend.search(pattern="demo:run*", filters="project=run2024", limit="7", details="false", partial="true")
    (name, query), = backend.calls
    assert (query.scope, query.pattern, query.filters, query.limit, query.details, query.partial) == (
        "demo", "run*", {"project": "run2024"}, 7, False, True
    )
    await backend.list_files("demo:run2024.raw.0001")
    assert backend.calls[-1] == ("list_files", "demo", "run2024.raw.0001")


async def test_demo_file_work_runs_off_the_event_loop(demo, monkeypatch):
    import shutil
    import threading

    loop_thread = threading.get_ident()
    seen = []
    real_copy = shutil.copyfile

    def copyfile(src, dest):
        seen.append(threading.get_ident())
        return real_copy(src, dest)

    monkeypatch.setattr(shutil, "copyfile", copyfile)
    await demo.stage("demo:run2024.calib.0001")
    assert seen and loop_thread not in seen


# -- rucio-clients errors at the client boundary become the catalogue's error family -----------


def _rucio(tmp_path, error, **kwargs):
    return raising_catalog(str(tmp_path), error, **kwargs)


_rx = rucio_exception


@pytest.mark.parametrize(
    "error, status, words",
    [
        (_rx("AccessDenied", "Account alice can not list files"), 403, "does not let account 'alice'"),
        (_rx("ScopeAccessDenied", "no"), 403, "ask the Rucio admins"),
        (_rx("CannotAuthenticate", "Cannot authenticate to account alice with given credentials"), 401, "credentials"),
        (_rx("RSENotFound", "RSE 'DISK' not found"), 502, "RucioCatalog.rse"),
        (_rx("RuleNotFound", "gone"), 404, "no such object"),
        (_rx("InvalidReplicationRule", "bad"), 409, "refused the replication rule"),
        (_rx("Duplicate", "exists"), 409, "already has this"),
        (_rx("ServiceUnavailable", "maintenance"), 503, "try again later"),
        (_rx("RucioException", "no error information passed (http status code: 500)"), 503, "with HTTP 500"),
        (_rx("UnsupportedOperation", "x" * 100000), 502, "the catalogue answered list files with UnsupportedOperation"),
        (KeyError("bytes"), 502, "did not understand (KeyError)"),
    ],
    ids=["access-denied", "scope-access-denied", "cannot-authenticate", "rse-not-found", "rule-not-found",
         "invalid-rule", "duplicate", "service-unavailable", "bare-http-500", "unexpected-rucio-error",
         "unexpected-error"],
)
async def test_rucio_errors_become_catalogue_errors_with_a_status(tmp_path, error, status, words):
    from science_gateway.core.catalog import CatalogError

    catalog = _rucio(tmp_path, error)
    try:
        with pytest.raises(CatalogError) as e:
            await catalog.list_files("astro:run2024.raw.0001")
        assert e.value.status == status and words in str(e.value), str(e.value)[:300]
        assert len(str(e.value)) < 400 and "Traceback" not in str(e.value)
    finally:
        await catalog.close()


async def test_rucio_expected_no_answers_stay_none(tmp_path):
    catalog = _rucio(tmp_path, _rx("DataIdentifierNotFound", "Data identifier 'astro:x' not found"))
    try:
        assert await catalog.list_files("astro:x") is None
    finally:
        await catalog.close()


async def test_an_expired_oidc_token_says_log_in_again(tmp_path):
    from science_gateway.core.catalog import NotAuthenticated

    token_file = tmp_path / "bt"
    token_file.write_text("expired-token\n")
    catalog = _rucio(tmp_path, _rx("CannotAuthenticate", "token expired"), auth_type="oidc", token_file=str(token_file))
    try:
        with pytest.raises(NotAuthenticated) as e:
            await catalog.list_files("astro:x")
        assert e.value.status == 401 and "your token expired" in str(e.value) and "log in" in str(e.value)
        assert "expired-token" not in str(e.value)
    finally:
        await catalog.close()


async def test_a_refused_token_never_starts_rucio_clients_interactive_login(tmp_path, monkeypatch):
    """On a 401 rucio-clients' own Client asks Rucio for a login URL, prints it and reads a code
    from standard input (a hung or failed server thread); the backend's client says "log in again"."""
    import http.server
    import threading

    from science_gateway.core.catalog import NotAuthenticated

    seen = []

    class Rucio(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.path)
            if self.path.startswith("/auth/oidc"):  # what a Rucio with OIDC configured answers
                self.send_response(200)
                self.send_header("X-Rucio-OIDC-Auth-URL", "http://127.0.0.1:9/auth?x=1")
            else:
                self.send_response(401)
                self.send_header("ExceptionClass", "CannotAuthenticate")
                self.send_header("ExceptionMessage", "Cannot authenticate with given credentials")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Rucio)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    token_file = tmp_path / "bt"
    token_file.write_text("a.refused.token\n")
    monkeypatch.setenv("BEARER_TOKEN_FILE", str(token_file))  # what the backend's client sets
    catalog = RucioCatalog(
        rucio_host=f"http://127.0.0.1:{server.server_address[1]}", auth_type="oidc", token_file=str(token_file),
        account="alice", rse="DISK", mount_path=str(tmp_path), allowed_scopes=["astro"], timeout=10,
    )
    try:
        with pytest.raises(NotAuthenticated) as e:
            await catalog.list_files("astro:x")
        assert e.value.status == 401 and "log in to the gateway again" in str(e.value)
        assert seen and not any(p.startswith("/auth/oidc") for p in seen), seen
    finally:
        await catalog.close()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("written", [None, ""], ids=["absent", "empty"])
async def test_a_missing_token_file_says_no_token_yet(tmp_path, written):
    from science_gateway.core.catalog import NotAuthenticated

    token_file = tmp_path / "bt_u1000"
    if written is not None:
        token_file.write_text(written)
    catalog = RucioCatalog(
        rucio_host="http://127.0.0.1:9", auth_type="oidc", token_file=str(token_file), account="alice",
        rse="DISK", mount_path=str(tmp_path), allowed_scopes=["astro"], timeout=5,
    )
    try:
        with pytest.raises(NotAuthenticated) as e:
            await catalog.list_files("astro:x")
        assert e.value.status == 401
        assert "no token yet" in str(e.value) and "token keeper" in str(e.value) and "cannot reach" not in str(e.value)
    finally:
        await catalog.close()


async def test_rucio_local_path_checks_run_off_the_event_loop(tmp_path, monkeypatch):
    import threading

    loop_thread, seen = threading.get_ident(), []
    real_exists, real_realpath = os.path.exists, os.path.realpath

    def exists(path):
        seen.append(("exists", threading.get_ident()))
        return real_exists(path)

    def realpath(path, **kwargs):
        seen.append(("realpath", threading.get_ident()))
        return real_realpath(path, **kwargs)

    catalog = _rucio(tmp_path, KeyError("no call expected"))
    catalog._rse_info = {"deterministic": True, "lfn2pfn_algorithm": "hash"}
    catalog._files["astro:ds"] = [{"scope": "astro", "name": f"f{i}", "bytes": 1} for i in range(3)]
    rule = {"id": "r1", "scope": "astro", "name": "ds", "state": "REPLICATING",
            "locks_ok_cnt": 0, "locks_replicating_cnt": 3, "locks_stuck_cnt": 0}
    monkeypatch.setattr(os.path, "exists", exists)
    monkeypatch.setattr(os.path, "realpath", realpath)
    try:
        request = await catalog._request_from_rule(rule)
    finally:
        monkeypatch.undo()
        await catalog.close()
    assert request.files_total == 3 and request.paths == []
    assert {kind for kind, _ in seen} == {"exists", "realpath"}
    assert loop_thread not in {thread for _, thread in seen}


# -- Rucio failing after a status was known: the last status with a notice, nothing lost --------


def _rule(rule_id, updated_minute, state="REPLICATING"):
    return {"id": rule_id, "scope": "astro", "name": f"ds-{rule_id}", "state": state, "locks_ok_cnt": 1,
            "locks_replicating_cnt": 1, "locks_stuck_cnt": 0, "account": "alice",
            "updated_at": datetime.datetime(2026, 1, 1, 12, updated_minute), "created_at": None, "expires_at": None}


async def test_a_failing_rucio_serves_the_last_status_with_a_notice(tmp_path):
    """Before: every status call while Rucio failed was an error, and a kernel's wait() ended."""
    from science_gateway.core.catalog import BackendUnavailable

    catalog = _rucio(tmp_path, _rx("ServerConnectionException"), status_refresh_seconds=0)
    try:
        with pytest.raises(BackendUnavailable):  # nothing known yet: the error itself
            await catalog.status()
        known = StageRequest(id="r1", did="astro:ds", state=IN_PROGRESS, files_total=2, files_done=1, files_in_flight=1)
        catalog._snapshot = (0.0, {"r1": known})
        for _ in range(2):
            [current] = await catalog.status()
            assert (current.id, current.state, current.files_done) == ("r1", IN_PROGRESS, 1)
            assert "not updated since" in current.notice and "cannot reach Rucio" in current.notice
            assert current.notice == catalog.status_notice
        assert (await catalog.get_request("r1")).notice == current.notice
        with pytest.raises(BackendUnavailable, match="not in the last status"):
            await catalog.get_request("r2")  # unknown now, not "no such request"
    finally:
        await catalog.close()


async def test_a_refresh_that_fails_half_way_keeps_the_watermark(tmp_path, monkeypatch):
    """Before: the rules read before the failure moved the watermark, so the incremental refresh
    after the outage skipped the rules updated earlier than them (until the next full listing)."""
    from science_gateway.core.catalog import BackendUnavailable

    catalog = _rucio(tmp_path, KeyError("no call expected"))
    catalog._watermark = datetime.datetime(2026, 1, 1, 11, 0)
    catalog._snapshot, catalog._last_full = (0.0, {}), 10.0 ** 12  # incremental refreshes only
    rules = [_rule("late", 30), _rule("early", 5)]

    async def call(what, fn, *args, **kwargs):
        return rules

    async def from_rule(rule):
        if rule["id"] == "early":
            raise BackendUnavailable("cannot reach Rucio")
        return StageRequest(id=rule["id"], did="astro:x", state=IN_PROGRESS)

    monkeypatch.setattr(catalog, "_call", call)
    monkeypatch.setattr(catalog, "_request_from_rule", from_rule)
    try:
        with pytest.raises(BackendUnavailable):
            await catalog._refresh()
        assert catalog._watermark == datetime.datetime(2026, 1, 1, 11, 0)
    finally:
        await catalog.close()


async def test_a_hung_rucio_holds_only_the_first_status_call_for_its_timeout(tmp_path):
    """While a refresh hangs in the background, status answers from the last snapshot at once."""
    import threading

    released = threading.Event()
    catalog = _rucio(tmp_path, KeyError("unused"), status_refresh_seconds=0, timeout=0.2)

    class HangingClient:
        headers = {}

        def __getattr__(self, name):
            return lambda *args, **kwargs: released.wait(30)

    catalog._new_client = HangingClient
    known = StageRequest(id="r1", did="astro:ds", state=IN_PROGRESS, files_total=2, files_done=1, files_in_flight=1)
    catalog._snapshot = (0.0, {"r1": known})
    try:
        [first] = await catalog.status()  # waited for the timeout, then the last status
        assert "did not answer within" in first.notice
        catalog.timeout = 30  # the next background refresh hangs for as long as the client does
        [second] = await catalog.status()  # starts it, answers at once
        [third] = await catalog.status()
        assert catalog._refreshing is not None and not catalog._refreshing.done()
        assert second.files_done == third.files_done == 1 and third.notice
    finally:
        released.set()
        if catalog._refreshing is not None:
            await asyncio.wait([catalog._refreshing], timeout=10)
        await catalog.close()
