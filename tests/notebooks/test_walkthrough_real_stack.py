"""The astronomer's walkthrough runs unchanged on the real stack: Slurm, Rucio, Dask on Slurm.

Each code cell of ``notebooks/examples/01-astronomer-walkthrough.ipynb`` runs, as written, in a
kernel of the user's server (a Slurm job whose catalogue is Rucio, where ``SCIENCE_GATEWAY_DASK``
and the Rucio settings are), as JupyterLab would run it; the stack is ``real_stack``'s. Its Dask
workers are Slurm jobs named after the session's job.
"""

import asyncio
import json
import os
import pwd

import nbformat
import pytest
from sgtest.real_stack import ACCOUNT, FLUX_MEAN, N_FILES, NOTEBOOK, ROWS, USER, dataset, drive_transfers, hub, rucio, slurm, squeue  # noqa: F401
from sgtest.real_stack import start_session, stop_session

from sgtest.kernel import KernelError, RemoteKernel
from sgtest import rucio_transfers as rt
from sgtest.hub import RunningHub, wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.rucio, pytest.mark.hub]


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

    session, workers_name = start_session(hub, slurm)
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
    stop_session(session, hub, slurm)
