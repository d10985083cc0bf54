"""The Rucio backend against the REAL Rucio server of scripts/services/rucio.

Rules become real file copies through Rucio's own transfer daemons (sgtest.rucio_transfers).
Each test stages datasets it creates itself, so the tests can run again on the same server.
"""

import json

import pytest
from tornado.httpclient import HTTPClientError

from science_gateway.core.catalog import InvalidQuery, QuotaExceeded, ScopeNotAllowed
from science_gateway.jupyter_ext.catalog.rucio import RucioCatalog
from sgtest import rucio_transfers as rt

pytestmark = pytest.mark.rucio


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with rt.private_token_dir(tmp_path_factory.mktemp("rucio-tokens")):
        yield rt.rucio_env()


@pytest.fixture(scope="module")
def admin(env):
    return rt.client(env)


backend_config = rt.backend_config


@pytest.fixture
async def alice(env):
    catalog = RucioCatalog(**backend_config(env))
    yield catalog
    await catalog.close()


@pytest.fixture
async def bob(env):
    catalog = RucioCatalog(**backend_config(env, user="bob"))
    yield catalog
    await catalog.close()


async def test_search_builtin_and_freeform_metadata(alice):
    page = await alice.search(alice.query("run2024*", "project=run2024, datatype=RAW", scope="astro"))
    found = {d.did: d for d in page.datasets}
    assert {"astro:run2024.raw.0001", "astro:run2024.raw.0002", "astro:run2024.raw.0003"} <= set(found)
    first = found["astro:run2024.raw.0001"]
    assert first.files == 3 and first.bytes > 0
    assert first.metadata["project"] == "run2024" and first.metadata["target"] == "crab"
    assert first.availability == "disk"
    assert found["astro:run2024.raw.0002"].availability == "tape"

    crab = await alice.search(alice.query("*", "target=crab", scope="astro"))
    assert {"astro:run2024.raw.0001", "astro:run2024.raw.0003"} <= {d.did for d in crab.datasets}
    assert "astro:run2024.raw.0002" not in {d.did for d in crab.datasets}

    with pytest.raises(InvalidQuery, match="cannot be combined"):
        await alice.search(alice.query("*", "datatype=RAW, target=crab", scope="astro"))


def count_calls(catalog) -> list[str]:
    """From now on, the name of each rucio-clients call ``catalog`` makes (``del catalog._call`` ends it)."""
    calls = []
    real_call = catalog._call

    async def counting(what, *args, **kwargs):
        calls.append(what)
        return await real_call(what, *args, **kwargs)

    catalog._call = counting
    return calls


async def test_search_without_details_is_one_call(alice):
    await alice.search(alice.query("*", scope="astro", limit=1))  # logs in, once
    calls = count_calls(alice)
    page = await alice.search(alice.query("run2024*", "datatype=RAW", scope="astro", details=False))
    assert calls == ["search"]
    first = next(d for d in page.datasets if d.name == "run2024.raw.0001")
    assert (first.files, first.metadata, first.availability) == (3, {"datatype": "RAW"}, "unknown")
    await alice.search(alice.query("run2024*", "datatype=RAW", scope="astro"))
    await alice.search(alice.query("run2024*", "datatype=RAW", scope="astro"))
    assert calls.count("metadata") == 1  # the second page of details came from the cache
    del alice._call  # the class's own _call again


async def test_details_are_three_bulk_calls_and_partial_answers_with_sizes_and_availability(env, alice):
    """Details for a page: the dataset replicas, the DID columns and the free-form plugin, one bulk
    call each. A partial search (the widget's) answers with the sizes list_dids gave and the
    availability; the same search again brings the metadata without asking for the rest again."""
    await alice.search(alice.query("*", scope="astro", limit=1, details=False))  # logs in, once
    calls = count_calls(alice)
    query = dict(pattern="run2024*", filters="project=run2024, datatype=RAW", scope="astro")
    page = await alice.search(alice.query(**query, partial=True))
    assert sorted(c for c in calls if c != "list RSEs") == ["dataset replicas", "search"]  # (RSE list: once)
    first = next(d for d in page.datasets if d.name == "run2024.raw.0001")
    assert (first.files, first.availability) == (3, "disk") and first.bytes > 0
    assert first.metadata_pending and first.metadata == {"project": "run2024", "datatype": "RAW"}
    assert next(d for d in page.datasets if d.name == "run2024.raw.0002").availability == "tape"

    complete = await alice.search(alice.query(**query))
    first = next(d for d in complete.datasets if d.name == "run2024.raw.0001")
    assert first.metadata["target"] == "crab" and not first.metadata_pending and first.files == 3
    assert sorted(c for c in calls if c != "list RSEs") == [
        "dataset replicas", "free-form metadata", "metadata", "search", "search"
    ]

    # a free-form filter's list_dids (Rucio's JSON plugin) has no sizes: the dataset replicas have
    # them; a plugin this Rucio does not have adds nothing and fails nothing
    plain = RucioCatalog(**{**backend_config(env), "freeform_metadata_plugins": ["NO_SUCH_PLUGIN"]})
    try:
        plain_calls = count_calls(plain)
        query = dict(pattern="run2024*", filters="target=crab", scope="astro")
        crab = await plain.search(plain.query(**query, partial=True))
        assert sorted(c for c in plain_calls if c != "list RSEs") == ["dataset replicas", "search"]
        first = next(d for d in crab.datasets if d.name == "run2024.raw.0001")
        assert (first.files, first.availability, first.metadata) == (3, "disk", {"target": "crab"}) and first.bytes > 0
        assert first.metadata_pending
        crab = await plain.search(plain.query(**query))
        first = next(d for d in crab.datasets if d.name == "run2024.raw.0001")
        assert first.metadata["project"] == "run2024" and first.files == 3
        assert not any(d.metadata_pending for d in crab.datasets)
        assert sorted(c for c in plain_calls if c != "list RSEs") == [
            "dataset replicas", "free-form metadata", "metadata", "search", "search"
        ]
    finally:
        await plain.close()
    del alice._call  # the class's own _call again


async def test_search_pages_and_scopes_follow_policy(alice):
    seen, token, pages = [], None, 0
    while True:
        page = await alice.search(alice.query("survey.tile.*", limit=7, page=token, scope="astro"))
        seen += [d.did for d in page.datasets]
        pages += 1
        token = page.next
        if token is None:
            break
    assert len(seen) == len(set(seen)) == 30 and pages == 5
    calls = count_calls(alice)  # a page that ends exactly at the last result: one call, no extra row
    full = await alice.search(alice.query("survey.tile.*", limit=30, scope="astro", details=False))
    assert len(full.datasets) == 30 and full.next and calls == ["search"]
    after = await alice.search(alice.query("survey.tile.*", limit=30, page=full.next, scope="astro", details=False))
    assert (after.datasets, after.next) == ([], None)
    del alice._call
    everywhere = await alice.search(alice.query("run2024*", "project=run2024", limit=50))
    dids = {d.did for d in everywhere.datasets}
    assert "calib:run2024.calib.0001" in dids and "astro:run2024.raw.0001" in dids
    assert not any(d.startswith("private:") for d in dids)
    with pytest.raises(ScopeNotAllowed):
        alice.query("*", scope="private")
    with pytest.raises(ScopeNotAllowed):
        await alice.stage("private:run2024.raw.secret")
    with pytest.raises(InvalidQuery):
        await alice.search(alice.query("*", scope="astro", page="0.99999"))


async def test_stage_progress_paths_restart_and_cancel(env, admin, alice, bob):
    did = rt.make_dataset(admin, env, n_files=4)
    request = await alice.stage(did)
    assert request.state == "in_progress" and request.tape_recall
    assert (request.files_done, request.files_in_flight, request.files_total) == (0, 4, 4)
    assert "recalling from tape: 0 of 4" in request.message
    again = await alice.stage(did)
    assert again.reused and again.id == request.id

    done_counts = []
    for _ in range(12):
        await rt.transfer_round(env, bulk=1)
        current = await alice.get_request(request.id)
        done_counts.append(current.files_done)
        assert len(current.paths) == current.files_done
        if current.state == "ready":
            break
    assert current.state == "ready" and done_counts[-1] == 4
    assert done_counts == sorted(done_counts)
    files = {f.name for f in await alice.list_files(did)}
    for path in current.paths:
        assert path.startswith(env["RUCIO_MOUNT_PATH"])
        with open(path) as f:
            assert f.readline().startswith("# astro:")
        assert path.rsplit("/", 1)[1] in files

    # a new server (a new backend) sees the same request: Rucio is the source of truth
    restarted = RucioCatalog(**backend_config(env))
    try:
        assert (await restarted.get_request(request.id)).state == "ready"
    finally:
        await restarted.close()

    # another user neither sees nor cancels it
    assert await bob.get_request(request.id) is None
    assert await bob.cancel(request.id) is False
    assert (await alice.get_request(request.id)).state == "ready"

    assert await alice.cancel(request.id) is True
    assert await alice.get_request(request.id) is None
    assert request.id not in {r.id for r in await alice.status()}


async def test_a_missing_source_file_is_stuck_with_its_reason(env, admin, alice):
    did = rt.make_dataset(admin, env, n_files=3, missing_files=(1,))
    request = await alice.stage(did)
    await rt.transfer_round(env, cycles=5)
    current = await alice.get_request(request.id)
    assert current.state == "failed"
    assert (current.files_done, current.files_failed, current.files_in_flight) == (2, 1, 0)
    assert [f.did for f in current.failed] == [f"{did}.part001.csv"]
    assert "No such file" in current.failed[0].reason and "No such file" in current.message
    assert len(current.paths) == 2
    assert await alice.cancel(request.id)


async def test_status_calls_do_not_grow_with_files(env, admin, alice):
    small, large = rt.make_dataset(admin, env, n_files=2), rt.make_dataset(admin, env, n_files=40)
    requests = [await alice.stage(small), await alice.stage(large)]
    await alice.status()  # learns each new request's file list once
    calls = count_calls(alice)
    statuses = await alice.status()
    assert calls == ["list rules"]
    assert {r.id for r in requests} <= {r.id for r in statuses}
    del alice._call  # the class's own _call again
    for request in requests:
        assert await alice.cancel(request.id)


async def test_changes_by_other_clients_arrive_without_a_full_listing(env, admin):
    """What a rare full listing relies on: the incremental one carries others' new rules and cancels."""
    watcher = RucioCatalog(**{**backend_config(env), "full_refresh_seconds": 3600})
    other = RucioCatalog(**backend_config(env))  # the same account elsewhere: another server, a pipeline
    try:
        first = await other.stage(rt.make_dataset(admin, env, n_files=2))
        assert first.id in {r.id for r in await watcher.status()}  # the one full listing
        last_full = watcher._last_full
        made = await other.stage(rt.make_dataset(admin, env, n_files=2))
        assert made.id in {r.id for r in await watcher.status()}
        assert await other.cancel(made.id)
        assert made.id not in {r.id for r in await watcher.status()}
        assert first.id in {r.id for r in await watcher.status()}
        assert watcher._last_full == last_full  # all of it through `updated_after` listings
        assert await other.cancel(first.id)
    finally:
        await watcher.close()
        await other.close()


async def test_quota_is_checked_before_a_rule_is_made(env, bob):
    with pytest.raises(QuotaExceeded, match="quota") as e:
        await bob.stage("astro:run2024.raw.0002")
    assert "bob" in str(e.value) and env["RUCIO_DISK_RSE"] in str(e.value)
    assert "astro:run2024.raw.0002" not in {r.did for r in await bob.status()}


async def test_refused_credentials_are_a_401_that_says_so(env, tmp_path, monkeypatch):
    from rucio.client.baseclient import BaseClient

    from science_gateway.core.catalog import NotAuthenticated

    # a token directory of its own: the client would reuse the account's cached token otherwise
    monkeypatch.setattr(BaseClient, "TOKEN_PATH_PREFIX", f"{tmp_path}/.rucio_")
    catalog = RucioCatalog(**{**backend_config(env), "password": "not-the-password"})
    try:
        with pytest.raises(NotAuthenticated) as e:  # was a 503 "cannot reach"-style answer before
            await catalog.list_files("astro:run2024.raw.0001")
        assert e.value.status == 401 and "credentials" in str(e.value) and "not-the-password" not in str(e.value)
    finally:
        await catalog.close()


async def test_a_rule_rucio_refuses_is_a_clear_4xx_not_a_500(env):
    """A real refusal from the server: a rule on an RSE expression that names no RSE."""
    from science_gateway.core.catalog import CatalogError

    catalog = RucioCatalog(**{**backend_config(env), "rse": "NO_SUCH_RSE_SG"})
    try:
        with pytest.raises(CatalogError) as e:
            await catalog.stage("astro:run2024.raw.0001")
        assert e.value.status in (400, 404, 409, 502) and "NO_SUCH_RSE_SG" in str(e.value), str(e.value)
        assert len(str(e.value)) < 400
    finally:
        await catalog.close()


async def test_unknown_datasets(alice):
    assert await alice.stage("astro:no.such.dataset") is None
    assert await alice.list_files("astro:no.such.dataset") is None


# -- the REST API with the Rucio backend -----------------------------------------------------------


@pytest.fixture
def gateway_config(env):
    return {
        "GatewayExtension": {"catalog_class": "science_gateway.jupyter_ext.catalog.rucio.RucioCatalog"},
        "RucioCatalog": backend_config(env),
    }


async def test_rest_api_with_rucio(env, admin, bob, jp_fetch):
    async def fetch(method, *parts, body=None, **kwargs):
        if body is not None:
            kwargs["body"] = json.dumps(body)
        r = await jp_fetch("gateway", "api", *parts, method=method, **kwargs)
        return r.code, json.loads(r.body) if r.body else None

    search = {"pattern": "astro:run2024*", "filters": "datatype=RAW", "limit": "2"}
    code, page = await fetch("GET", "datasets", params={**search, "partial": "true"})
    assert code == 200 and len(page["datasets"]) == 2 and page["next"]
    assert all(d["metadata_pending"] and d["files"] for d in page["datasets"])  # the free-form keys follow
    code, page = await fetch("GET", "datasets", params=search)
    assert code == 200 and not any(d["metadata_pending"] for d in page["datasets"])
    did = rt.make_dataset(admin, env, n_files=2)
    code, request = await fetch("POST", "requests", body={"did": did})
    assert code == 201 and request["tape_recall"]
    await rt.transfer_round(env)
    code, current = await fetch("GET", "requests", request["id"])
    assert current["state"] == "ready" and len(current["paths"]) == 2

    bobs = await bob.stage("calib:run2024.calib.0001")  # small enough for bob's quota
    assert bobs is not None
    for method, parts in [("GET", ["requests", bobs.id]), ("DELETE", ["requests", bobs.id])]:
        with pytest.raises(HTTPClientError) as e:
            await fetch(method, *parts)
        assert e.value.code == 404
    assert await bob.get_request(bobs.id) is not None

    for params, status in [({"scope": "private"}, 403), ({"limit": "100000"}, 400), ({"scope": "nosuch"}, 403)]:
        with pytest.raises(HTTPClientError) as e:
            await fetch("GET", "datasets", params=params)
        assert e.value.code == status
    code, _ = await fetch("DELETE", "requests", request["id"])
    assert code == 204
    assert await bob.cancel(bobs.id)
