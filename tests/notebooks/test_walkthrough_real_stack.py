"""The astronomer's walkthrough runs unchanged on the real stack: Slurm, Rucio, Dask on Slurm.

A real JupyterHub starts the user's server as a Slurm job (``science-gateway-slurm``); the server's
catalogue is the Rucio backend, configured by the hub through ``Spawner.args`` (the settings) and
``Spawner.environment`` (the account and its password, read by ``RucioCatalog`` from
``$RUCIO_ACCOUNT``/``$RUCIO_PASSWORD``), as docs/catalog.md describes. Each code cell of
``notebooks/examples/01-astronomer-walkthrough.ipynb`` runs, as written, in a kernel of that server
(where ``SCIENCE_GATEWAY_DASK`` and the Rucio settings are), as JupyterLab would run it.

The notebook stages the first dataset its search finds: the test makes a fresh one on the tape RSE,
in a scope of its own that the server searches first, and runs Rucio's transfer daemons while the
notebook waits. Its Dask workers are Slurm jobs named after the session's job.
Needs scripts/services/slurm, scripts/services/rucio and configurable-http-proxy on PATH.
"""

import asyncio
import copy
import json
import os
import pwd
import secrets
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

# the Slurm and Dask tests' helpers (wrapper commands, users, policy; a kernel behind the hub)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "slurm"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "dask"))

from kernel_support import KernelError, RemoteKernel  # noqa: E402
from science_gateway.jupyter_ext.dask.builders import worker_job_name  # noqa: E402
from sgtest import rucio_transfers as rt  # noqa: E402
from sgtest.hub import HubSession, RunningHub, wait_for  # noqa: E402
from sgtest.notebooks import EXAMPLES  # noqa: E402
from slurm_hub_support import POLICY, USERS, SlurmFixture  # noqa: E402

pytestmark = [pytest.mark.slurm, pytest.mark.rucio, pytest.mark.hub]

NOTEBOOK = EXAMPLES / "01-astronomer-walkthrough.ipynb"
#: an astronomer (group astro) with a unix account; the Rucio account alice holds their requests
USER = "astro1"
ACCOUNT = "astro-2024"
N_FILES = 3
#: each file: a ``time,flux`` header, then 50 rows ``i,i*i`` (sgtest.rucio_transfers.make_dataset)
ROWS = 50
FLUX_MEAN = sum(i * i for i in range(ROWS)) / ROWS


@pytest.fixture(scope="module")
def rucio(tmp_path_factory):
    env = rt.rucio_env()
    rt.private_token_dir(tmp_path_factory.mktemp("rucio-tokens"))
    return env


@pytest.fixture(scope="module")
def dataset(rucio):
    """A fresh run2024 RAW dataset on tape, alone in a new scope (so it is the first search result)."""
    admin = rt.client(rucio)
    scope = f"walk{secrets.token_hex(4)}"
    admin.add_scope("root", scope)
    did = rt.make_dataset(admin, rucio, n_files=N_FILES, scope=scope, prefix="run2024.raw",
                          meta={"project": "run2024", "datatype": "RAW"}, header="time,flux")
    # Rucio's abacus daemon (run by each round) counts the new dataset's tape replica: search then
    # says "tape" instead of "unknown", as it would with the daemons of a production Rucio running
    asyncio.run(rt.transfer_round(rucio))
    yield did
    # expire the stage-in rule at once (what the catalogue's cancel does), whatever the test reached
    name = did.split(":", 1)[1]
    for rule in admin.list_did_rules(scope, name):
        if rule["rse_expression"] == rucio["RUCIO_DISK_RSE"]:
            admin.update_replication_rule(rule["id"], {"lifetime": 0})


@pytest.fixture(scope="module")
def slurm():
    fixture = SlurmFixture()
    fixture.session_job_ids = []
    yield fixture
    fixture.cleanup()
    for job_id in fixture.session_job_ids:
        subprocess.run(["scancel", f"--name={worker_job_name(fixture.job_name + '-dask', job_id)}"],
                       timeout=30, check=False)


def hub_config(slurm, rucio, dataset, state_dir) -> dict:
    config = slurm.hub_config()
    policy = copy.deepcopy(POLICY)
    policy["astro"]["max_dask_workers"] = 2  # what the walkthrough asks for
    config["ResourcePolicy"] = {"groups": policy}
    config["DaskPresets"] = {
        "presets": {
            "small": {"description": "1 core, 1 GB per worker", "partition": "cpu", "cores": 1, "memory_gb": 1,
                      "walltime_minutes": 30, "workers_per_job": 2, "max_workers": 4},
        },
        "interface": "lo",  # one machine: scheduler and workers on loopback
        "job_name": f"{slurm.job_name}-dask",
    }
    scopes = [dataset.split(":", 1)[0], *rucio["RUCIO_SCOPES"].split(",")]
    # the user's server: the Rucio backend (settings as arguments, the secret in the environment)
    config["Spawner"] = {
        **config["Spawner"],
        "args": [
            "--GatewayExtension.catalog_class=science_gateway.jupyter_ext.catalog.rucio.RucioCatalog",
            f"--RucioCatalog.rucio_host={rucio['RUCIO_URL']}",
            f"--RucioCatalog.auth_host={rucio['RUCIO_AUTH_URL']}",
            "--RucioCatalog.auth_type=userpass",
            f"--RucioCatalog.rse={rucio['RUCIO_DISK_RSE']}",
            f"--RucioCatalog.mount_path={rucio['RUCIO_MOUNT_PATH']}",
            *(f"--RucioCatalog.allowed_scopes={scope}" for scope in scopes),
            "--RucioCatalog.rule_lifetime=3600",
            "--RucioCatalog.status_refresh_seconds=1",
        ],
        "environment": {
            "SCIENCE_GATEWAY_STATE_DIR": str(state_dir),
            "RUCIO_ACCOUNT": rucio["RUCIO_ACCOUNT"],
            "RUCIO_PASSWORD": rucio["RUCIO_PASSWORD"],
        },
    }
    return config


@pytest.fixture(scope="module")
def hub(slurm, rucio, dataset, tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("walkthrough-hub")
    with RunningHub(state_dir, config=hub_config(slurm, rucio, dataset, state_dir)) as running:
        yield running


def squeue(name: str) -> list[dict]:
    out = subprocess.run(["squeue", "--noheader", f"--name={name}", "--format=%A|%i|%T|%u|%P|%a|%k"],
                         capture_output=True, text=True, timeout=20, check=True).stdout
    keys = ("job_id", "array_id", "state", "user", "partition", "account", "comment")
    return [dict(zip(keys, line.split("|"))) for line in out.splitlines() if line.strip()]


async def drive_transfers(env: dict, admin, did: str, stop: asyncio.Event) -> int:
    """Rounds of Rucio's transfer daemons until the stage-in rule on the disk RSE is OK."""
    scope, name = did.split(":", 1)
    rounds = 0
    while not stop.is_set():
        await rt.transfer_round(env)
        rounds += 1
        rules = await asyncio.to_thread(lambda: list(admin.list_did_rules(scope, name)))
        if any(r["rse_expression"] == env["RUCIO_DISK_RSE"] and r["state"] == "OK" for r in rules):
            return rounds
        await asyncio.sleep(0.5)
    return rounds


async def run_cell(kernel: RemoteKernel, index: int, source: str, hub: RunningHub, timeout: float = 180) -> str:
    try:
        return await kernel.execute(source, timeout=timeout)
    except (KernelError, TimeoutError) as e:
        pytest.fail(f"code cell {index} of {NOTEBOOK.name} failed:\n{source}\n\n{type(e).__name__}: {e}\n\n"
                    f"hub log:\n{hub.log_tail(30)}", pytrace=False)


async def probe(kernel: RemoteKernel, code: str) -> dict:
    """Run ``code`` (which prints one JSON line last) in the notebook's kernel; return it."""
    return json.loads((await kernel.execute(code)).strip().splitlines()[-1])


WORKERS_PROBE = """
import json as _json, os as _os
print(_json.dumps({
    "slurm_jobs": sorted(client.run(lambda: _os.environ.get("SLURM_JOB_ID", "")).values()),
    "uids": sorted(set(client.run(_os.getuid).values())),
    "readable": sorted(set(client.run(lambda: all(_os.access(p, _os.R_OK) for p in paths)).values())),
}))
"""

RESULT_PROBE = """
import json as _json, os as _os
print(_json.dumps({
    "did": dataset.did, "state": request.state, "paths": paths,
    "sizes": [_os.path.getsize(p) for p in paths], "summaries": summaries,
    "uid": _os.getuid(), "has_dask_env": bool(_os.environ.get("SCIENCE_GATEWAY_DASK")),
    "widget_errors": [browser.error.value, launcher.error.value], "cluster_closed": launcher.cluster is None,
}))
"""


async def test_walkthrough_runs_unchanged_on_slurm_rucio_and_dask(slurm, rucio, dataset, hub):
    admin = rt.client(rucio)
    scope, name = dataset.split(":", 1)
    files = sorted(f["name"] for f in admin.list_files(scope, name))
    assert len(files) == N_FILES

    session = HubSession(hub)
    assert session.login(USER, USERS[USER][0]).status_code == 200
    session.start_server(USER, timeout=120, options={"partition": "cpu", "memory_gb": 2, "account": ACCOUNT})
    session_job = slurm.jobs()[USER]["job_id"]
    slurm.session_job_ids.append(session_job)
    workers_name = worker_job_name(f"{slurm.job_name}-dask", session_job)
    kernel = RemoteKernel(session, USER)
    kernel.start()

    cells = [c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code"]
    staging = next(i for i, s in enumerate(cells) if "catalog.wait(" in s)
    computing = next(i for i, s in enumerate(cells) if "wait_for_workers" in s)
    outputs = {}
    for index, source in enumerate(cells):
        if index == staging:
            # the notebook waits for its stage-in; Rucio's daemons copy the files meanwhile
            stop = asyncio.Event()
            transfers = asyncio.create_task(drive_transfers(rucio, admin, dataset, stop))
            try:
                outputs[index] = await run_cell(kernel, index, source, hub, timeout=240)
            finally:
                stop.set()
                rounds = await asyncio.wait_for(transfers, 300)
            assert rounds >= 1
        else:
            outputs[index] = await run_cell(kernel, index, source, hub, timeout=240)
        if index == computing:
            # the cluster is up: its workers are Slurm jobs of this user, named after the session
            jobs = squeue(workers_name)
            workers = await probe(kernel, WORKERS_PROBE)
            assert len(jobs) == 2, jobs
            assert all(j["state"] == "RUNNING" and j["user"] == USER and j["partition"] == "cpu" for j in jobs), jobs
            assert all(j["account"] == ACCOUNT for j in jobs), jobs  # the session's allocation account
            assert all(j["comment"] == f"science-gateway=science-gateway user={USER} dask=small" for j in jobs), jobs
            assert workers["slurm_jobs"] == sorted(j["job_id"] for j in jobs)
            assert workers["uids"] == [pwd.getpwnam(USER).pw_uid]
            assert workers["readable"] == [True]

    # the search found the test's dataset first; it was recalled from tape, with progress shown
    lines = outputs[staging].splitlines()
    assert lines[0].startswith(f"{dataset}: {N_FILES} files, ") and lines[0].endswith(", tape"), lines
    assert lines[1].startswith("recalling from tape: ") and lines[-1] == f"ready: {N_FILES} of {N_FILES} files readable"

    result = await probe(kernel, RESULT_PROBE)
    assert result["did"] == dataset and result["state"] == "ready"
    assert result["uid"] == pwd.getpwnam(USER).pw_uid  # the kernel ran in the user's own server
    assert result["has_dask_env"] and result["widget_errors"] == ["", ""] and result["cluster_closed"]
    # the staged files: on the mounted disk RSE, readable by the user, not empty
    assert sorted(p.rsplit("/", 1)[1] for p in result["paths"]) == files
    for path, size in zip(result["paths"], result["sizes"]):
        assert path.startswith(rucio["RUCIO_MOUNT_PATH"]) and size > 0
        assert os.path.getsize(path) == size
    # a summary of every file, from its real contents
    summaries = result["summaries"]
    assert sorted(s["file"] for s in summaries) == files
    for summary in summaries:
        assert (summary["column"], summary["rows"]) == ("flux", ROWS)
        assert summary["mean"] == pytest.approx(FLUX_MEAN)

    # the last cell closed the cluster: its worker jobs end
    wait_for(lambda: not squeue(workers_name), 60, what="the Dask worker jobs to end after close_cluster()")
    kernel.shutdown()
    r = session.http.delete(f"{hub.url}/hub/api/users/{USER}/server", headers=session.xsrf_headers(), timeout=60)
    assert r.status_code in (202, 204), r.text
    wait_for(lambda: USER not in slurm.jobs(), 60, what="the session job to end")
