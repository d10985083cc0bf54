"""Publishing results to the REAL Rucio of scripts/services/rucio, and the RO-Crate of a publish.

Outputs go to a real storage element (``SG-USERDISK``, ``file://`` on local disk) through
rucio-clients' upload, are registered as a dataset of the user's own scope ``user.alice`` with
the user's metadata and the provenance, are found again by a metadata search, and another
account (bob) cannot write into that scope: Rucio refuses it. Each test publishes under names of
its own, so the tests can run again on the same server. The storage element, the scopes and the
quotas are made here through the root client when the server's bootstrap has not made them.
"""

import hashlib
import json
import os
import uuid
import zlib
from pathlib import Path

import pytest

from science_gateway.core.catalog import AccessDenied
from science_gateway.core.publish import InvalidPublish
from science_gateway.jupyter_ext.catalog.rucio import RucioCatalog, deterministic_path
from science_gateway.jupyter_ext.crate import ADLER32, MD5, export_run
from sgtest import rucio_transfers as rt
from sgtest.crates import check_ro_crate_11, listed_files

pytestmark = pytest.mark.rucio

PUBLISH_RSE = "SG-USERDISK"
INPUT = "astro:run2024.raw.0001"  # a fixture dataset with a copy on SG-DISK


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with rt.private_token_dir(tmp_path_factory.mktemp("rucio-tokens")):
        yield rt.rucio_env()


@pytest.fixture(scope="module")
def admin(env):
    return rt.client(env)


@pytest.fixture(scope="module")
def publish_path(env, admin) -> Path:
    """The publish RSE, a scope and quota for each test account (what the bootstrap makes; made
    here when an older bootstrap did not)."""
    from rucio.common.exception import Duplicate, RSENotFound, RSEProtocolNotSupported

    path = Path(env.get("RUCIO_PUBLISH_PATH") or Path(env["RUCIO_DISK_PATH"]).parent / "userdisk")
    for folder in (path, path / "user"):
        folder.mkdir(exist_ok=True)
        folder.chmod(0o1777)
    try:
        admin.get_rse(PUBLISH_RSE)
    except RSENotFound:
        admin.add_rse(PUBLISH_RSE, rse_type="DISK", deterministic=True)
    try:
        schemes = {p["scheme"] for p in admin.get_protocols(PUBLISH_RSE)}
    except RSEProtocolNotSupported:
        schemes = set()
    if "file" not in schemes:
        admin.add_protocol(PUBLISH_RSE, {
            "scheme": "file", "hostname": "localhost", "port": 0, "prefix": str(path) + "/",
            "impl": "rucio.rse.protocols.posix.Default",
            "domains": {"lan": {"read": 1, "write": 1, "delete": 1}, "wan": {"read": 1, "write": 1, "delete": 1}},
        })
    for account in (env["RUCIO_ACCOUNT"], env["RUCIO_OTHER_ACCOUNT"]):
        admin.set_local_account_limit(account, PUBLISH_RSE, 10**9)
        try:
            admin.add_scope(account, f"user.{account}")
        except Duplicate:
            pass
    return path


def config(env, user="alice", **traits):
    return rt.backend_config(env, user=user, publish_rse=PUBLISH_RSE, **traits)


@pytest.fixture
async def alice(env, publish_path):
    catalog = RucioCatalog(**config(env))
    yield catalog
    await catalog.close()


@pytest.fixture
def home(tmp_path):
    home = tmp_path / "home"
    (home / "out").mkdir(parents=True)
    token = uuid.uuid4().hex
    (home / "out" / "flux.csv").write_text(f"energy,flux\n# {token}\n" + "".join(f"{i},{i * i}\n" for i in range(100)))
    (home / "out" / "summary.json").write_text(json.dumps({"token": token, "events": 100}))
    (home / "analysis.ipynb").write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    (home / "analysis.out.ipynb").write_text(json.dumps({"cells": [], "metadata": {"executed": True}, "nbformat": 4, "nbformat_minor": 5}))
    return home


def md5(path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def adler32(path) -> str:
    return f"{zlib.adler32(Path(path).read_bytes()) & 0xffffffff:08x}"


async def publish(catalog, home, name, analysis, **kwargs):
    return await catalog.publish(
        name, ["out/flux.csv", str(home / "out" / "summary.json")], str(home),
        metadata={"analysis": analysis, "stage": "final"}, inputs=[INPUT], notebook="analysis.ipynb",
        executed_notebook="analysis.out.ipynb", parameters={"threshold": 0.5, "target": "crab"},
        jobs=["4242", "4243_1"], user={"name": "alice"}, **kwargs,
    )


async def test_publish_uploads_registers_and_a_search_finds_it(env, admin, alice, home, publish_path):
    analysis = f"crab-{uuid.uuid4().hex[:10]}"
    name = f"results.{analysis}"
    published = await publish(alice, home, name, analysis)
    scope = "user.alice"
    assert published.did == f"{scope}:{name}" and published.rse == PUBLISH_RSE

    # the files are on the storage element, byte for byte, where Rucio's layout puts them
    sources = {f"{name}.out.flux.csv": home / "out" / "flux.csv", f"{name}.out.summary.json": home / "out" / "summary.json"}
    for file_name, source in sources.items():
        stored = publish_path / deterministic_path(scope, file_name)
        assert stored.read_bytes() == source.read_bytes()

    # registered in Rucio: a closed dataset of alice's account in her scope, its files with the
    # checksums of the local files, a replica AVAILABLE on the RSE and a rule keeping it there
    did = admin.get_did(scope, name)
    assert (did["type"], did["account"], did["open"]) == ("DATASET", "alice", False)
    files = {f["name"]: f for f in admin.list_files(scope, name)}
    assert set(files) == set(sources)
    for file_name, source in sources.items():
        assert files[file_name]["adler32"] == adler32(source)
        assert files[file_name]["bytes"] == source.stat().st_size
    assert {f.name: f.md5 for f in published.files} == {n: md5(p) for n, p in sources.items()}
    replicas = list(admin.list_replicas([{"scope": scope, "name": n} for n in sources], all_states=True))
    assert all(r["states"].get(PUBLISH_RSE) == "AVAILABLE" for r in replicas)
    rules = list(admin.list_replication_rules(filters={"scope": scope, "name": name}))
    assert [(r["account"], r["rse_expression"]) for r in rules] == [("alice", PUBLISH_RSE)]

    # the metadata and the provenance, in Rucio's free-form metadata
    meta = admin.get_metadata(scope, name, plugin="JSON")
    assert (meta["analysis"], meta["stage"]) == (analysis, "final")
    assert meta["sg_inputs"] == [INPUT] and meta["sg_jobs"] == ["4242", "4243_1"]
    assert meta["sg_parameters"] == {"threshold": 0.5, "target": "crab"}
    assert (meta["sg_notebook"], meta["sg_executed_notebook"]) == ("analysis.ipynb", "analysis.out.ipynb")
    assert meta["sg_user"] == {"name": "alice", "account": "alice"} and meta["sg_published_by"] == "alice"
    assert meta["sg_environment"]["rucio-clients"].startswith("41.")

    # found again by the gateway's metadata search (user.alice is not among the allowed scopes
    # of the catalogue: the user's own scope is searched too)
    assert scope not in alice.allowed_scopes
    page = await alice.search(alice.query("*", f"analysis={analysis}"))
    assert [d.did for d in page.datasets] == [published.did]
    found = page.datasets[0]
    assert found.files == 2 and found.metadata["stage"] == "final" and found.metadata["sg_inputs"] == [INPUT]
    assert [d.did for d in (await alice.search(alice.query("*", f"analysis={analysis}, stage=final"))).datasets] == [published.did]
    assert (await alice.search(alice.query("*", f"analysis={analysis}, stage=draft"))).datasets == []

    # publishing the same name again is refused; nothing changes
    with pytest.raises(Exception, match="exists already") as refused:
        await publish(alice, home, name, analysis)
    assert refused.value.status == 409


async def test_another_account_cannot_write_into_the_scope(env, admin, publish_path, home):
    """bob, told to publish into alice's scope, is refused by Rucio before anything is uploaded."""
    from rucio.common.exception import AccessDenied as RucioAccessDenied

    name = f"intrusion.{uuid.uuid4().hex[:10]}"
    bob = RucioCatalog(**config(env, user="bob", publish_scope="user.alice"))
    try:
        with pytest.raises(AccessDenied, match="does not let account 'bob'"):
            await publish(bob, home, name, "intrusion")
    finally:
        await bob.close()
    assert not list(admin.list_dids("user.alice", [{"name": f"{name}*"}], did_type="all"))
    assert not any(publish_path.rglob(f"{name}*"))
    # and with bob's own client, straight at Rucio
    bob_client = rt.client(env, account="bob", password=env["RUCIO_OTHER_PASSWORD"])
    with pytest.raises(RucioAccessDenied):
        bob_client.add_dataset("user.alice", name)
    # his own scope works
    bob = RucioCatalog(**config(env, user="bob"))
    try:
        mine = await bob.publish(name, ["out/flux.csv"], str(home), metadata={"analysis": "bobs"})
    finally:
        await bob.close()
    assert mine.did == f"user.bob:{name}"


async def test_hostile_paths_and_metadata_reach_no_rucio_call(env, alice, home, tmp_path):
    (tmp_path / "secret").write_text("x")
    (home / "escape").symlink_to(tmp_path / "secret")
    calls = []
    real = alice._call

    async def counting(what, *args, **kwargs):
        calls.append(what)
        return await real(what, *args, **kwargs)

    alice._call = counting
    name = f"hostile.{uuid.uuid4().hex[:8]}"
    for files, metadata, message in [
        (["../secret"], {}, "may not hold '..'"),
        ([str(tmp_path / "secret")], {}, "outside your home"),
        (["/etc/passwd"], {}, "outside your home"),
        (["escape"], {}, "through a link"),
        (["out/flux.csv"], {"k": "a*"}, "search filter"),
        (["out/flux.csv"], {"name": "x"}, "own"),
        (["out/flux.csv"], {"sg_published_by": "mallory"}, "own"),
        (["out/flux.csv"], {"k.gte": "1"}, "must start with a letter"),
    ]:
        with pytest.raises(InvalidPublish, match=message):
            await alice.publish(name, files, str(home), metadata=metadata)
    assert calls == []
    del alice._call


async def test_ro_crate_of_a_real_publish_lists_inputs_and_outputs_with_checksums(env, alice, home):
    analysis = f"crate-{uuid.uuid4().hex[:10]}"
    published = await publish(alice, home, f"results.{analysis}", analysis)
    prov = published.provenance
    answer = await export_run(
        alice, str(home), "run.crate", notebook=prov.notebook, executed_notebook=prov.executed_notebook,
        parameters=prov.parameters, inputs=prov.inputs, outputs=[published.did], jobs=prov.jobs,
        environment=prov.environment, user=prov.user, title="Crab flux",
    )
    assert answer["path"] == "run.crate"
    crate = home / "run.crate"
    entities = check_ro_crate_11(crate)
    assert (crate / "notebook" / "analysis.ipynb").read_bytes() == (home / "analysis.ipynb").read_bytes()
    assert (crate / "executed-notebook" / "analysis.out.ipynb").read_bytes() == (home / "analysis.out.ipynb").read_bytes()

    # every output file, with checksums that match the local files
    outputs = listed_files(entities, published.did)
    local = {f"results.{analysis}.out.flux.csv": home / "out" / "flux.csv",
             f"results.{analysis}.out.summary.json": home / "out" / "summary.json"}
    assert set(outputs) == set(local)
    for name, path in local.items():
        assert outputs[name][MD5] == md5(path) and outputs[name][ADLER32] == adler32(path)
        assert outputs[name]["contentSize"] == str(path.stat().st_size)
    # every input file, with checksums that match the files on the storage element
    inputs = listed_files(entities, INPUT)
    scope, dataset = INPUT.split(":")
    assert len(inputs) == 3
    for name, entity in inputs.items():
        on_disk = Path(env["RUCIO_DISK_PATH"]) / deterministic_path(scope, name)
        assert entity[MD5] == md5(on_disk) and entity[ADLER32] == adler32(on_disk)

    run = entities["#run"]
    assert {o["@id"] for o in run["object"]} >= {f"#dataset/{INPUT}", "#parameter/threshold", "#parameter/target"}
    assert {r["@id"] for r in run["result"]} == {f"#dataset/{published.did}", "executed-notebook/analysis.out.ipynb"}
    assert {i["@id"] for i in run["instrument"]} == {"notebook/analysis.ipynb", "#environment"}
    assert run["identifier"] == ["job 4242", "job 4243_1"]
    person = entities[run["agent"]["@id"]]
    assert person["@type"] == "Person" and person["name"] == "alice" and "alice" in person["identifier"]
    assert entities["#parameter/threshold"]["value"] == "0.5"
    env_parts = {entities[p["@id"]]["name"]: entities[p["@id"]]["softwareVersion"] for p in entities["#environment"]["softwareRequirements"]}
    assert env_parts == prov.environment
    assert os.path.isfile(crate / "ro-crate-metadata.json")
