"""The real stack the astronomer's walkthrough runs on: Slurm, Rucio, Dask on Slurm (shared fixtures).

A real JupyterHub starts the user's server as a Slurm job (``science-gateway-slurm``); the server's
catalogue is the Rucio backend, configured by the hub through ``Spawner.args`` (the settings) and
``Spawner.environment`` (the account and its password, read by ``RucioCatalog`` from
``$RUCIO_ACCOUNT``/``$RUCIO_PASSWORD``), as docs/catalog.md describes. The walkthrough stages the
first dataset its search finds: ``dataset`` makes a fresh one on the tape RSE, in a scope of its
own that the server searches first; ``drive_transfers`` runs Rucio's transfer daemons meanwhile.

Test modules import the fixtures they use (``from sgtest.real_stack import dataset, hub, ...``): each module
gets its own hub, dataset and Slurm cleanup. Needs scripts/services/slurm, scripts/services/rucio
and configurable-http-proxy on PATH.
"""

import asyncio
import contextlib
import copy
import pwd
import secrets
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

# the Slurm tests' helpers (wrapper commands, users, policy)

from science_gateway.core.presets import worker_job_name  # noqa: E402
from sgtest import rucio_transfers as rt  # noqa: E402
from sgtest.rucio_transfers import rucio  # noqa: E402,F401 (a fixture the real-stack modules import)
from sgtest.hub import HubSession, RunningHub, wait_for  # noqa: E402
from sgtest.notebooks import EXAMPLES  # noqa: E402
from sgtest.slurm import POLICY, USERS, SlurmFixture  # noqa: E402

NOTEBOOK = EXAMPLES / "01-astronomer-walkthrough.ipynb"
#: an astronomer (group astro) with a unix account; the Rucio account alice holds their requests
USER = "astro1"
ACCOUNT = "astro-2024"
N_FILES = 3
#: each file: a ``time,flux`` header, then 50 rows ``i,i*i`` (sgtest.rucio_transfers.make_dataset)
ROWS = 50
FLUX_MEAN = sum(i * i for i in range(ROWS)) / ROWS


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
    args, environment = rt.server_settings(rucio, scopes)
    config["Spawner"] = {
        **config["Spawner"],
        "args": args,
        "environment": {"SCIENCE_GATEWAY_STATE_DIR": str(state_dir), **environment},
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


async def drive_transfers(env: dict, admin, did: str, stop) -> int:
    """Rounds of Rucio's transfer daemons until the stage-in rule on the disk RSE is OK or ``stop.is_set()``
    (an ``asyncio.Event``, or a ``threading.Event`` when run from a thread beside a browser)."""
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


@contextlib.contextmanager
def transfers_in_thread(env: dict, admin, did: str, rounds: list):
    """Rucio's transfer daemons in a thread (beside a browser), until ``did``'s stage-in rule is OK
    or the block is left; the number of rounds they ran is appended to ``rounds``."""
    stop = threading.Event()
    thread = threading.Thread(target=lambda: rounds.append(asyncio.run(drive_transfers(env, admin, did, stop))))
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(300)


def start_session(hub: RunningHub, slurm) -> tuple[HubSession, str]:
    """Log the astronomer in and start their server as a Slurm job; the session and its workers' job name.

    Their home is a real one that outlives test runs: its ``examples/`` goes first, so the server
    copies this build's notebooks (it never overwrites a user's own copy).
    """
    shutil.rmtree(Path(pwd.getpwnam(USER).pw_dir) / "examples", ignore_errors=True)
    session = HubSession(hub)
    assert session.login(USER, USERS[USER][0]).status_code == 200
    session.start_server(USER, timeout=120, options={"partition": "cpu", "memory_gb": 2, "account": ACCOUNT})
    session_job = slurm.jobs()[USER]["job_id"]
    slurm.session_job_ids.append(session_job)
    return session, worker_job_name(f"{slurm.job_name}-dask", session_job)


def stop_session(session: HubSession, hub: RunningHub, slurm) -> None:
    r = session.http.delete(f"{hub.url}/hub/api/users/{USER}/server", headers=session.xsrf_headers(), timeout=60)
    assert r.status_code in (202, 204), r.text
    wait_for(lambda: USER not in slurm.jobs(), 60, what="the session job to end")
