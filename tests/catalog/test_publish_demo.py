"""Publishing results and RO-Crates on the embedded default's demo catalogue: the backend, the
checks every backend shares (paths stay in the user's home, metadata a search can match), and
the REST routes in a real Jupyter Server."""

import asyncio
import json
import os

import pytest
from tornado.httpclient import HTTPClientError

from science_gateway.core.publish import InvalidPublish, check_metadata, resolve_user_file
from science_gateway.jupyter_ext.catalog.demo import DemoCatalog
from science_gateway.jupyter_ext.crate import MD5 as MD5_TERM
from sgtest.crates import check_ro_crate_11, listed_files, md5_of

INPUT = "demo:run2024.raw.0001"


@pytest.fixture
def home(tmp_path):
    home = tmp_path / "home"
    (home / "out").mkdir(parents=True)
    (home / "out" / "flux.csv").write_text("energy,flux\n1,2\n")
    (home / "out" / "plot.txt").write_text("a plot\n")
    (home / "analysis.ipynb").write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    (tmp_path / "secret.txt").write_text("not yours\n")
    return home


@pytest.fixture
def catalog(tmp_path):
    return DemoCatalog(user="alice", state_dir=str(tmp_path / "state"))


async def test_publish_then_search_finds_it_with_metadata_and_provenance(catalog, home):
    assert catalog.publish_scope == "user.alice"
    published = await catalog.publish(
        "crab.flux.v1", ["out/flux.csv", str(home / "out" / "plot.txt")], str(home),
        metadata="analysis=crab-flux, version=1", inputs=[INPUT], notebook="analysis.ipynb",
        parameters={"threshold": 0.5, "target": "crab"}, jobs=["1234", "1235_2"], user={"name": "alice"},
    )
    assert published.did == "user.alice:crab.flux.v1"
    assert [f.name for f in published.files] == ["crab.flux.v1.out.flux.csv", "crab.flux.v1.out.plot.txt"]
    assert [f.md5 for f in published.files] == [md5_of(home / "out" / "flux.csv"), md5_of(home / "out" / "plot.txt")]
    assert published.sources == ["out/flux.csv", "out/plot.txt"]
    prov = published.provenance
    assert (prov.inputs, prov.notebook, prov.jobs, prov.user) == ([INPUT], "analysis.ipynb", ["1234", "1235_2"], {"name": "alice"})
    assert prov.environment["python"] and "traitlets" in prov.environment  # this server's packages

    page = await catalog.search(filters="analysis=crab-flux")
    assert [d.did for d in page.datasets] == ["user.alice:crab.flux.v1"]
    found = page.datasets[0]
    assert found.metadata["version"] == "1" and found.metadata["sg_inputs"] == [INPUT]
    assert found.metadata["sg_parameters"] == {"threshold": 0.5, "target": "crab"}
    assert [d.did for d in (await catalog.search(filters="sg_published_by=alice")).datasets] == [published.did]
    # in the user's scope even when the catalogue's allowed scopes do not list it
    catalog.allowed_scopes = ["demo"]
    assert [d.did for d in (await catalog.search(filters="analysis=crab-flux")).datasets] == [published.did]
    # and it can be staged like any other dataset
    request = await catalog.stage(published.did)
    assert request.state == "ready" and sorted(os.path.basename(p) for p in request.paths) == [f.name for f in published.files]

    with pytest.raises(Exception, match="already published") as refused:
        await catalog.publish("crab.flux.v1", ["out/flux.csv"], str(home))
    assert refused.value.status == 409


def test_hostile_paths_are_refused(home, tmp_path):
    (home / "link-out").symlink_to(tmp_path / "secret.txt")
    (home / "dir-link").symlink_to(tmp_path)
    (home / "inside-link").symlink_to(home / "out" / "flux.csv")
    for path, message in [
        ("../secret.txt", "may not hold '..'"),
        ("out/../../secret.txt", "may not hold '..'"),
        (str(tmp_path / "secret.txt"), "outside your home"),
        ("/etc/passwd", "outside your home"),
        ("link-out", "through a link"),
        ("dir-link/secret.txt", "through a link"),
        ("out", "is not a file"),
        ("missing.csv", "is not a file"),
        ("a\x00b", "must be a path"),
        ("x" * 2000, "must be a path"),
        ("", "must be a path"),
    ]:
        with pytest.raises(InvalidPublish, match=message):
            resolve_user_file(str(home), path)
    assert resolve_user_file(str(home), "inside-link")[1] == "out/flux.csv"
    assert resolve_user_file(str(home), str(home / "out" / "flux.csv"))[1] == "out/flux.csv"


@pytest.mark.parametrize("metadata, message", [
    ({"a b": "x"}, "must start with a letter"),
    ({"run.gte": "x"}, "must start with a letter"),
    ({"sg_user": "mallory"}, "the gateway's or the catalogue's own"),
    ({"name": "x"}, "the gateway's or the catalogue's own"),
    ({"scope": "x"}, "the gateway's or the catalogue's own"),
    ({"k": "a*"}, "what a search filter can match"),
    ({"k": "two words"}, "what a search filter can match"),
    ({"k": "x" * 300}, "what a search filter can match"),
    ({"k": 3}, "what a search filter can match"),
    ({"k": "'; DROP TABLE dids; --"}, "what a search filter can match"),
    ({f"k{i}": "v" for i in range(51)}, "at most 50"),
    ("novalue", "must look like key=value"),
    (["k=v"], "must be an object"),
], ids=["space", "operator-dot", "provenance-key", "name", "scope", "wildcard", "space-value", "long", "number",
        "sql", "too-many", "no-equals", "list"])
def test_hostile_metadata_is_refused(metadata, message):
    with pytest.raises(InvalidPublish, match=message):
        check_metadata(metadata)


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="../x"), "dataset name"),
    (dict(name="a/b"), "dataset name"),
    (dict(name="x" * 201), "at most 200"),
    (dict(files=[]), "at least one file"),
    (dict(files=["../secret.txt"]), "may not hold '..'"),
    (dict(files=["out/flux.csv"], notebook="../secret.txt"), "notebook path"),
    (dict(inputs=["no-scope"]), "input dataset id"),
    (dict(parameters={"1x": 1}), "Python identifier"),
    (dict(parameters={"x": {"nested": "two\nlines"}}), "control character"),  # as a notebook job checks them
    (dict(parameters={"x": float("nan")}), "finite"),
    (dict(jobs=["1; rm -rf /"]), "job id"),
    (dict(environment={"numpy": "1.0; rm"}), "not a version"),
    (dict(metadata={"sg_inputs": "x"}), "own"),
    (dict(user={"name": "a b"}), "short text"),
], ids=["dotdot-name", "slash-name", "long-name", "no-files", "dotdot-file", "notebook-outside", "bad-input",
        "param-name", "param-nested", "param-nan", "job-shell", "env-version", "provenance-key", "user"])
async def test_a_refused_publish_writes_nothing(catalog, home, kwargs, message):
    args = {"name": "ok.v1", "files": ["out/flux.csv"], **{k: v for k, v in kwargs.items() if k in ("name", "files")}}
    other = {k: v for k, v in kwargs.items() if k not in ("name", "files")}
    with pytest.raises(InvalidPublish, match=message):
        await catalog.publish(args["name"], args["files"], str(home), **other)
    assert not (home.parent / "state").exists()


async def test_crate_of_a_demo_publish(catalog, home):
    from science_gateway.jupyter_ext.crate import export_run

    published = await catalog.publish("crab.flux.v2", ["out/flux.csv"], str(home), inputs=[INPUT],
                                      notebook="analysis.ipynb", parameters={"threshold": 0.5}, user={"name": "alice"})
    (home / "crates").mkdir()
    answer = await export_run(
        catalog, str(home), "crates/run1", notebook="analysis.ipynb", parameters={"threshold": 0.5},
        inputs=[INPUT], outputs=[published.did], jobs=["77"], user={"name": "alice"},
    )
    assert answer["path"] == "crates/run1"
    entities = check_ro_crate_11(home / "crates" / "run1")
    assert (home / "crates" / "run1" / "notebook" / "analysis.ipynb").read_text() == (home / "analysis.ipynb").read_text()
    outputs = listed_files(entities, published.did)
    assert outputs["crab.flux.v2.out.flux.csv"][MD5_TERM] == md5_of(home / "out" / "flux.csv")
    inputs = listed_files(entities, INPUT)
    bundled = catalog.files_dir
    assert len(inputs) == 3 and all(
        f[MD5_TERM] == md5_of(os.path.join(bundled, "demo", "run2024.raw.0001", name)) for name, f in inputs.items()
    )
    run = entities["#run"]
    assert {r["@id"] for r in run["result"]} == {f"#dataset/{published.did}"}
    assert entities[run["agent"]["@id"]]["name"] == "alice"

    with pytest.raises(InvalidPublish, match="exists already"):
        await export_run(catalog, str(home), "crates/run1", outputs=[published.did])
    with pytest.raises(InvalidPublish, match="outside your home"):
        await export_run(catalog, str(home), "/tmp/crate-elsewhere", outputs=[published.did])
    with pytest.raises(InvalidPublish, match="may not hold"):
        await export_run(catalog, str(home), "../crate", outputs=[published.did])
    with pytest.raises(Exception, match="no dataset"):
        await export_run(catalog, str(home), "crates/run2", outputs=["user.alice:nothing.here"])


# -- the REST routes in a real Jupyter Server ------------------------------------------------------


@pytest.fixture
def gateway_config(tmp_path):
    return {"DemoCatalog": {"state_dir": str(tmp_path / "rest-state"), "user": "alice"}}


async def test_rest_publish_search_and_crate(jp_fetch, jp_root_dir):
    (jp_root_dir / "out").mkdir()
    (jp_root_dir / "out" / "result.csv").write_text("x,y\n1,2\n")
    (jp_root_dir / "nb.ipynb").write_text("{}")
    body = {"name": "rest.v1", "files": ["out/result.csv"], "metadata": {"analysis": "rest-test"},
            "inputs": [INPUT], "notebook": "nb.ipynb", "parameters": {"n": 3}, "jobs": ["42"]}
    r = await jp_fetch("gateway", "api", "publish", method="POST", body=json.dumps(body))
    assert r.code == 201
    published = json.loads(r.body)
    assert published["did"] == "user.alice:rest.v1" and published["provenance"]["jobs"] == ["42"]
    assert published["provenance"]["user"]["name"]  # who the server says the user is
    r = await jp_fetch("gateway", "api", "datasets", params={"filters": "analysis=rest-test"})
    assert [d["did"] for d in json.loads(r.body)["datasets"]] == ["user.alice:rest.v1"]

    r = await jp_fetch("gateway", "api", "crates", method="POST", body=json.dumps(
        {"dest": "run.crate", "outputs": ["user.alice:rest.v1"], "inputs": [INPUT], "notebook": "nb.ipynb"}))
    assert r.code == 201 and json.loads(r.body)["path"] == "run.crate"
    check_ro_crate_11(jp_root_dir / "run.crate")

    for route, bad, message in [
        ("publish", {"name": "x", "files": ["../../etc/passwd"]}, "may not hold"),
        ("publish", {"name": "x", "files": ["/etc/passwd"]}, "outside your home"),
        ("publish", {"name": "x", "files": ["out/result.csv"], "metadata": {"k": "a b"}}, "search filter"),
        ("publish", {"name": "x", "files": ["out/result.csv"], "user": {"name": "root"}}, "unknown key"),
        ("publish", {"name": "rest.v1", "files": ["out/result.csv"]}, "already published"),
        ("crates", {"dest": "/etc/x", "outputs": ["user.alice:rest.v1"]}, "outside your home"),
        ("crates", {"dest": "c2", "outputs": ["user.alice:rest.v1"], "zip": "yes"}, "true or false"),
        ("crates", {"outputs": ["user.alice:rest.v1"]}, "'dest' is missing"),
    ]:
        with pytest.raises(HTTPClientError) as e:
            await jp_fetch("gateway", "api", route, method="POST", body=json.dumps(bad))
        assert e.value.code in (400, 409), (route, bad)
        assert message in json.loads(e.value.response.body)["message"], (route, bad)
    assert not os.path.exists("/etc/x")


async def test_python_api_and_publish_panel_against_the_server(jp_root_dir, jp_auth_header, http_server_client,
                                                               jp_base_url, monkeypatch):
    """catalog.publish / export_crate and the PublishPanel's buttons, through the real REST API;
    a relative path is taken from the kernel's current folder."""
    pytest.importorskip("ipywidgets")
    from science_gateway.catalog import Catalog, CatalogAPIError
    from science_gateway.widgets import PublishPanel

    (jp_root_dir / "work" / "out").mkdir(parents=True)
    (jp_root_dir / "work" / "out" / "a.csv").write_text("1,2\n")
    (jp_root_dir / "work" / "nb.ipynb").write_text("{}")
    monkeypatch.chdir(jp_root_dir / "work")
    api = Catalog(url=http_server_client.get_url(jp_base_url), token=jp_auth_header["Authorization"].split()[1])

    published = await api.publish_async("api.v1", ["out/a.csv"], metadata="analysis=api-test",
                                        inputs=[INPUT], notebook="nb.ipynb", parameters={"k": 1}, jobs=[7])
    assert published.sources == ["work/out/a.csv"] and published.provenance.notebook == "work/nb.ipynb"
    assert published.provenance.jobs == ["7"] and "traitlets" in published.provenance.environment
    page = await api.search_async(filters="analysis=api-test")
    assert [d.did for d in page.datasets] == [published.did]
    crate = await api.export_crate_async("api.crate", published=published)
    assert crate["path"] == "work/api.crate"
    entities = check_ro_crate_11(jp_root_dir / "work" / "api.crate")
    assert set(listed_files(entities, INPUT)) and entities["#parameter/k"]["value"] == "1"
    with pytest.raises(CatalogAPIError, match="outside your home") as e:
        await api.publish_async("api.v2", ["/etc/passwd"])
    assert e.value.status == 400

    panel = PublishPanel(api, name="panel.v1", files=["out/a.csv"], metadata="analysis=panel-test",
                         inputs=[INPUT], notebook="nb.ipynb", jobs=["8"])
    assert panel.crate_button.disabled
    made = await asyncio.to_thread(panel.publish)
    assert made.did == "user.alice:panel.v1" and "panel.v1" in panel.result.value and panel.error.value == ""
    assert not panel.crate_button.disabled
    panel.crate_dest.value = "panel.crate"
    assert (await asyncio.to_thread(panel.export_crate))["path"] == "work/panel.crate"
    check_ro_crate_11(jp_root_dir / "work" / "panel.crate")
    # a refused publish is a sentence in the panel, not a traceback ('..' is taken from the
    # current folder, as a shell would: here it leads out of the home)
    panel.files.value = "../../etc/passwd"
    panel.name.value = "panel.v2"
    assert await asyncio.to_thread(panel.publish) is None
    assert "outside your home" in panel.error.value and "Traceback" not in panel.error.value


async def test_a_notebook_jobs_run_record_is_the_provenance_of_a_publish(catalog, home):
    """``Run.provenance()`` (science_gateway.jobs) gives publish what a batch run recorded."""
    from science_gateway.jobs import JobError, Run

    runs = home / "runs"
    runs.mkdir()
    for i in (0, 1):
        (runs / f"fit-{i}.ipynb").write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    second = "demo:run2024.raw.0002"
    record = {
        "id": "20261208-000000-abcdef", "notebook": str(home / "analysis.ipynb"), "parameters": {"threshold": 0.5},
        "tasks": [{"task": i, "parameters": {"threshold": 0.5, "dataset": did, "label": "not:a did?"},
                   "output": str(runs / f"fit-{i}.ipynb"), "output_path": f"runs/fit-{i}.ipynb"}
                  for i, did in enumerate([INPUT, second])],
        "job_ids": ["77_0", "77_1"], "environment": {"python": "3.11.2", "papermill": "2.6.0"},
    }
    run = Run(record, session=None, record_path=str(home / "run.json"))
    whole = run.provenance()
    assert whole["inputs"] == [INPUT, second] and whole["jobs"] == ["77_0", "77_1"]
    assert whole["executed_notebook"] is None and whole["parameters"] == {"threshold": 0.5}
    with pytest.raises(JobError, match="tasks 0 to 1"):
        run.provenance(task=2)

    published = await catalog.publish("fit.task1", ["out/flux.csv"], str(home), user={"name": "alice"},
                                      **run.provenance(task=1))
    prov = published.provenance
    assert prov.inputs == [second] and prov.jobs == ["77_1"]
    assert (prov.notebook, prov.executed_notebook) == ("analysis.ipynb", "runs/fit-1.ipynb")
    assert prov.parameters == {"threshold": 0.5, "dataset": second, "label": "not:a did?"}
    assert prov.environment == {"python": "3.11.2", "papermill": "2.6.0"}
