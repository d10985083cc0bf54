"""Pure builders of the catalogue backends, and the demo backend's stage-in, with plain asserts."""

import datetime
import os

import pytest
from traitlets.config import Config

from science_gateway.core.catalog import InvalidQuery, QuotaExceeded, ScopeNotAllowed
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
