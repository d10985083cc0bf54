"""Dask presets on the real Slurm, from a kernel inside a spawned server behind a real JupyterHub.

The hub uses the Slurm spawner; the user's kernel creates a preset cluster whose workers are Slurm
jobs (submitted by the kernel, as the user), charged to the session's account and tagged with the
user's identity. Needs scripts/services/slurm and configurable-http-proxy on PATH.
"""

import copy
import json
import os
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


#: run in another user's kernel: every way in to the owner's scheduler, and what came of it
INTRUDE = """
import json, os
from distributed import Client
from distributed.security import Security
address, tls_dir, marker = {address!r}, {tls_dir!r}, {marker!r}
host, port = address.split("://")[1].rsplit(":", 1)

def pwn():
    open(marker, "w").write("ran")

results = {{}}
for how, attempt in (
    ("no-credentials", lambda: Client(address, timeout=10)),
    ("own-temporary-credentials", lambda: Client(address, security=Security.temporary(), timeout=10)),
    ("plain-tcp", lambda: Client(f"tcp://{{host}}:{{port}}", timeout=10)),
):
    try:
        client = attempt()
        client.run(pwn)
        results[how] = "ran code"
        client.close()
    except Exception as e:
        results[how] = "refused: " + type(e).__name__
import urllib.request
try:
    results["dashboard-direct"] = "fetched %s" % urllib.request.urlopen(
        "http://127.0.0.1:%s/status" % {dashboard_port!r}, timeout=30).status
except Exception as e:
    results["dashboard-direct"] = "refused: " + type(e).__name__
try:
    results["read-credentials"] = str(os.listdir(tls_dir))
except OSError as e:
    results["read-credentials"] = "refused: " + type(e).__name__
print(json.dumps(results))
"""


async def test_only_the_owner_gets_into_a_cluster_and_its_dashboard(slurm, dask_hub):
    import pwd
    import stat

    owner = HubSession(dask_hub)
    assert owner.login("astro2", USERS["astro2"][0]).status_code == 200
    owner.start_server("astro2", timeout=120, options={"partition": "cpu", "memory_gb": 2, "account": "astro-2024"})
    kernel = RemoteKernel(owner, "astro2")
    kernel.start()
    out = await kernel.execute(START_CLUSTER.format(n=2) + textwrap.dedent("""
        print(json.dumps({
            "address": cluster.scheduler_address,
            "workers": sorted(client.scheduler_info()["workers"]),
            "sum": client.submit(sum, range(4)).result(),
            "link": cluster.dashboard_link,
            "tls_dir": cluster.shared_temp_directory,
            "files": sorted(f.name for f in (cluster._job_ca_file, cluster._job_cert, cluster._job_key)),
            "script": cluster.job_script(),
        }))
    """))
    result = json.loads(out.strip().splitlines()[-1])
    # the owner's client and the workers (Slurm jobs) talk TLS, on the configured interface (lo)
    assert result["address"].startswith("tls://127.0.0.1:"), result["address"]
    assert result["sum"] == 6
    assert len(result["workers"]) == 2 and all(w.startswith("tls://") for w in result["workers"]), result["workers"]
    # the scheduler listens on the configured interface only, the dashboard on loopback only
    from science_gateway.core.sockets import listeners, read_tables

    def listening_on(port: int) -> set[str]:
        return {str(address) for table in read_tables() for address, p, _uid in listeners(table) if p == port}

    assert listening_on(int(result["address"].rsplit(":", 1)[1])) == {"127.0.0.1"}
    assert listening_on(int(result["link"].split("/")[4])) == {"127.0.0.1"}
    # the workers' copy of the credentials: the owner's alone
    home = pwd.getpwnam("astro2").pw_dir
    assert result["tls_dir"] == f"{home}/.science-gateway/dask-tls"
    info = os.stat(result["tls_dir"])
    assert info.st_uid == pwd.getpwnam("astro2").pw_uid and stat.S_IMODE(info.st_mode) == 0o700
    assert len(result["files"]) == 3
    # ... and so are the worker jobs' logs
    logs = os.stat(f"{home}/.science-gateway/dask-logs")
    assert logs.st_uid == pwd.getpwnam("astro2").pw_uid and stat.S_IMODE(logs.st_mode) == 0o700
    for name in result["files"]:
        info = os.stat(name)
        assert info.st_uid == pwd.getpwnam("astro2").pw_uid and stat.S_IMODE(info.st_mode) == 0o600, name
        assert f"--tls-key {name}" in result["script"] or f"--tls-cert {name}" in result["script"] \
            or f"--tls-ca-file {name}" in result["script"]
    assert "BEGIN" not in result["script"]  # paths in the job script, never the key itself

    # another user on the same node, with a kernel of their own: no way into the owner's cluster
    other = HubSession(dask_hub)
    assert other.login("astro1", USERS["astro1"][0]).status_code == 200
    other.start_server("astro1", timeout=120, options={"partition": "cpu", "memory_gb": 2, "account": "astro-2024"})
    intruder = RemoteKernel(other, "astro1")
    intruder.start()
    marker = f"/tmp/{slurm.job_name}-intruded"
    link = result["link"]
    assert link.startswith("/user/astro2/proxy/") and link.endswith("/status"), link
    port = link.split("/")[4]
    out = await intruder.execute(INTRUDE.format(address=result["address"], tls_dir=result["tls_dir"], marker=marker,
                                                dashboard_port=port))
    attempts = json.loads(out.strip().splitlines()[-1])
    assert set(attempts) == {"no-credentials", "own-temporary-credentials", "plain-tcp", "dashboard-direct",
                             "read-credentials"}
    assert all(value.startswith("refused") for value in attempts.values()), attempts
    assert not os.path.exists(marker)

    # the dashboard: the owner's proxy shows it; the other user's own proxy refuses that port
    page = owner.get(link)
    assert page.status_code == 200 and "bokeh" in page.text.lower()
    for path in (f"/user/astro1/proxy/{port}/status", f"/user/astro1/proxy/localhost:{port}/status",
                 f"/user/astro1/proxy/absolute/{port}/status"):
        refused = other.get(path, allow_redirects=False)
        assert refused.status_code == 403, (path, refused.status_code, refused.text[:300])
    assert "is not yours" in other.get(f"/user/astro1/proxy/{port}/status").text

    # closing removes the credential files
    await kernel.execute("client.close(); cluster.close()")
    assert not any(os.path.exists(name) for name in result["files"])
    for session, user in ((owner, "astro2"), (other, "astro1")):
        r = session.http.delete(f"{dask_hub.url}/hub/api/users/{user}/server", headers=session.xsrf_headers(),
                                timeout=60)
        assert r.status_code in (202, 204), r.text
    wait_for(lambda: not {"astro1", "astro2"} & set(slurm.jobs()), 60, what="both session jobs to end")
