"""Dask presets on the real Slurm, from a kernel inside a spawned server behind a real JupyterHub.

The hub uses the Slurm spawner; the user's kernel creates a preset cluster whose workers are Slurm
jobs (submitted by the kernel, as the user), charged to the session's account and tagged with the
user's identity. Needs scripts/services/slurm and configurable-http-proxy on PATH.
"""

import copy
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# the Slurm tests' shared helpers (wrapper commands, test users, policy) live beside them

from sgtest.kernel import KernelError, RemoteKernel
from sgtest.slurm import POLICY, USERS, SlurmFixture  # noqa: E402
from sgtest.hub import HubSession, RunningHub, wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.hub]

#: astro may run 4 Dask workers; the preset alone would allow 8
MAX_DASK_WORKERS = 4


@pytest.fixture(scope="module")
def slurm():
    fixture = SlurmFixture()
    yield fixture
    fixture.cleanup()
    subprocess.run(["scancel", f"--name={fixture.job_name}-dask"], timeout=30, check=False)


@pytest.fixture(scope="module")
def dask_hub(slurm, tmp_path_factory):
    config = slurm.hub_config()
    policy = copy.deepcopy(POLICY)
    policy["astro"]["max_dask_workers"] = MAX_DASK_WORKERS
    # students (no Dask workers) start on the shared cpu partition: debug has room for one job only
    policy["students"]["partitions"]["cpu"] = {"max_cores": 1, "max_memory_gb": 1, "max_walltime_hours": 1}
    config["ResourcePolicy"] = {"groups": policy}
    config["DaskPresets"] = {
        "presets": {
            "small": {"description": "2 workers per sbatch", "partition": "cpu", "cores": 1, "memory_gb": 1,
                      "walltime_minutes": 30, "workers_per_job": 2, "max_workers": 8},
        },
        # one machine: scheduler and workers on loopback
        "interface": "lo",
        "job_name": f"{slurm.job_name}-dask",
        # counts the kernel's sbatch calls (the wrapper runs the real sbatch)
        "submit_command": str(slurm.dir / "sbatch"),
        # long: a killed kernel's workers stay, so the test sees the server's stop cancel them
        "death_timeout": 600,
    }
    with RunningHub(tmp_path_factory.mktemp("daskhub"), config=config) as hub:
        yield hub


def squeue(name: str) -> list[dict]:
    out = subprocess.run(
        ["squeue", "--noheader", f"--name={name}", "--format=%i|%T|%u|%k|%P|%a|%C|%m"],
        capture_output=True, text=True, timeout=20, check=True,
    ).stdout
    keys = ("job_id", "state", "user", "comment", "partition", "account", "cpus", "mem")
    return [dict(zip(keys, line.split("|"))) for line in out.splitlines() if line.strip()]


def session_job_id(slurm, user) -> str:
    return slurm.jobs()[user]["job_id"]


START_CLUSTER = """
import json, sys
from science_gateway import dask as sgd
cluster = sgd.cluster("small")
cluster.scale({n})
client = cluster.get_client()
client.wait_for_workers({n}, timeout=150)
"""


async def test_preset_cluster_in_a_slurm_session_then_limits_dashboard_and_lifecycle(slurm, dask_hub):
    session = HubSession(dask_hub)
    assert session.login("demo", USERS["demo"][0]).status_code == 200
    session.start_server("demo", timeout=120, options={"partition": "cpu", "memory_gb": 2, "account": "astro-dev"})
    workers_name = f"{slurm.job_name}-dask-{session_job_id(slurm, 'demo')}"
    kernel = RemoteKernel(session, "demo")
    kernel.start()

    # the presets the user may use, with the group's limit (REST and Python API agree)
    listed = session.get("/user/demo/gateway/api/dask/presets").json()
    assert listed["presets"]["small"]["max_workers"] == MAX_DASK_WORKERS
    assert listed["account"] == "astro-dev" and listed["backend"] == "slurm"

    sbatch_before = slurm.calls("sbatch")
    out = await kernel.execute(START_CLUSTER.format(n=4) + textwrap.dedent("""
        print(json.dumps({
            "sum": client.submit(sum, range(10)).result(),
            "workers": len(client.scheduler_info()["workers"]),
            "pythons": sorted(set(client.run(lambda: sys.executable).values())),
            "kernel_python": sys.executable,
            "link": cluster.dashboard_link,
            "presets": sorted(sgd.presets()["presets"]),
        }))
    """))
    result = json.loads(out.strip().splitlines()[-1])
    assert result["sum"] == 45 and result["workers"] == 4
    # workers run the kernel's own Python environment
    assert result["pythons"] == [result["kernel_python"]]
    assert result["presets"] == ["small"]
    # 4 workers, 2 per sbatch call (a job array of 2 one-worker tasks): 2 calls, run by the user
    assert slurm.calls("sbatch") - sbatch_before == 2
    jobs = squeue(workers_name)
    assert len(jobs) == 4, jobs
    assert len({job["job_id"].split("_")[0] for job in jobs}) == 2
    for job in jobs:
        assert job["state"] == "RUNNING"
        assert job["user"] == "demo"
        assert job["account"] == "astro-dev"  # the session's account
        assert job["partition"] == "cpu"
        assert job["comment"] == "science-gateway=science-gateway user=demo dask=small"
        assert (job["cpus"], job["mem"]) == ("1", "1G")
    for job in jobs:
        shown = subprocess.run(["scontrol", "show", "job", job["job_id"]], capture_output=True, text=True,
                               timeout=20, check=True).stdout
        assert "Account=astro-dev" in shown and "Partition=cpu" in shown
        assert "Comment=science-gateway=science-gateway user=demo dask=small" in shown

    # the dashboard goes through the user's server and the hub's proxy
    link = result["link"]
    assert link.startswith("/user/demo/proxy/") and link.endswith("/status"), link
    page = session.get(link)
    assert page.status_code == 200, page.text[:300]
    assert "Dask" in page.text and "bokeh" in page.text.lower()
    # ... and only for its owner
    other = HubSession(dask_hub)
    assert other.login("astro1", USERS["astro1"][0]).status_code == 200
    assert other.get(link, allow_redirects=False).status_code != 200

    # beyond the group's limit: a clear error, and nothing submitted
    sbatch_before = slurm.calls("sbatch")
    for call in ("cluster.scale(6)", "cluster.adapt(maximum=8)"):
        with pytest.raises(KernelError) as info:
            await kernel.execute(call)
        assert "DaskLimitError" in str(info.value)
        assert "allows at most 4 workers for your groups (astro)" in str(info.value)
    assert slurm.calls("sbatch") == sbatch_before
    assert len(squeue(workers_name)) == 4
    # adapt() counts whole jobs (2 workers per sbatch here): no partial job to submit then cancel
    out = await kernel.execute("a = cluster.adapt(minimum=1, maximum=3); print(a.minimum, a.maximum, type(a).__name__)")
    assert out.split() == ["2", "2", "WholeJobAdaptive"]

    # close: the worker jobs end
    await kernel.execute("client.close(); cluster.close()")
    wait_for(lambda: not squeue(workers_name), 60, what="worker jobs to end after close()")

    # a kernel shut down cleanly closes its clusters on the way out
    await kernel.execute(START_CLUSTER.format(n=2))
    assert len(squeue(workers_name)) == 2
    kernel.shutdown()
    wait_for(lambda: not squeue(workers_name), 60, what="worker jobs to end with the kernel")

    # a killed kernel cannot clean up: stopping the server cancels its workers
    kernel.start()
    link = (await kernel.execute(START_CLUSTER.format(n=2) + "print(cluster.dashboard_link)")).strip()
    assert session.get(link).status_code == 200
    assert len(squeue(workers_name)) == 2
    await kernel.execute("import os, signal, threading; threading.Timer(1, os.kill, (os.getpid(), signal.SIGKILL)).start()")
    # the scheduler died with the kernel: its dashboard no longer answers
    wait_for(lambda: session.get(link).status_code != 200, 60, what="the killed kernel's dashboard to go away")
    assert len(squeue(workers_name)) == 2  # orphaned: no scheduler, death_timeout is long here
    r = session.http.delete(f"{dask_hub.url}/hub/api/users/demo/server", headers=session.xsrf_headers(), timeout=60)
    assert r.status_code in (202, 204), r.text
    wait_for(lambda: "demo" not in slurm.jobs(), 60, what="the session job to end")
    wait_for(lambda: not squeue(workers_name), 60, what="the orphaned worker jobs to be cancelled")
    assert not squeue(f"{slurm.job_name}-dask")  # nothing left of this test's Dask jobs


async def test_a_group_without_dask_workers_gets_a_clear_error(slurm, dask_hub):
    session = HubSession(dask_hub)
    assert session.login("student", USERS["student"][0]).status_code == 200
    session.start_server("student", timeout=120, options={"partition": "cpu"})
    kernel = RemoteKernel(session, "student")
    kernel.start()
    assert session.get("/user/student/gateway/api/dask/presets").json()["presets"] == {}
    with pytest.raises(KernelError, match=r"none of your groups \(students\) is allowed Dask workers"):
        await kernel.execute("from science_gateway import dask; dask.cluster('small')")
    r = session.http.delete(f"{dask_hub.url}/hub/api/users/student/server", headers=session.xsrf_headers(), timeout=60)
    assert r.status_code in (202, 204)
    wait_for(lambda: "student" not in slurm.jobs(), 60, what="the student's job to end")
