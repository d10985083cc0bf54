"""Dask presets on the real HTCondor pool, from a kernel inside a server spawned as an HTCondor job.

The user's kernel creates a preset cluster whose workers are HTCondor jobs of the user (submitted by
the kernel through the wrapper condor_submit), charged to the session's account and tagged with the
user's identity; closing the cluster, and stopping the server, leaves no worker job behind.
"""

import copy
import json
import textwrap

import pytest
from sgtest.condor import POLICY, USERS
from sgtest.hub import HubSession, RunningHub, wait_for
from sgtest.kernel import KernelError, RemoteKernel

pytestmark = [pytest.mark.condor, pytest.mark.hub]

MAX_DASK_WORKERS = 4


@pytest.fixture(scope="module")
def dask_hub(condor, tmp_path_factory):
    config = condor.hub_config()
    policy = copy.deepcopy(POLICY)
    policy["astro"]["max_dask_workers"] = MAX_DASK_WORKERS
    config["ResourcePolicy"] = {"groups": policy}
    config["DaskPresets"] = {
        "presets": {
            "small": {"description": "2 workers per job", "partition": "cpu", "cores": 1, "memory_gb": 1,
                      "walltime_minutes": 30, "workers_per_job": 2, "max_workers": 8},
        },
        "interface": "lo",  # one machine: scheduler and workers on loopback
        "job_name": f"{condor.job_name}-dask",
        "condor_submit_command": condor.condor_submit.path,  # counts the kernel's submissions
        "condor_cancel_command": condor.condor_rm.path,
        "death_timeout": 600,  # long: a left-behind worker would still be there to see
    }
    with RunningHub(tmp_path_factory.mktemp("condordask"), config=config, env=condor.hub_env()) as hub:
        yield hub
    condor.run("condor_rm", "-constraint", f'regexp("^{condor.job_name}-dask", GatewayJob)', check=False)


def worker_ads(condor, name):
    return [ad for ad in condor.ads(f'GatewayJob == "{name}"') if ad["JobStatus"] in (1, 2, 5)]


START_CLUSTER = """
import json, sys
from science_gateway import dask as sgd
cluster = sgd.cluster("small")
cluster.scale({n})
client = cluster.get_client()
client.wait_for_workers({n}, timeout=150)
"""


async def test_preset_cluster_scales_to_4_htcondor_workers_and_leaves_no_job(condor, dask_hub):
    session = HubSession(dask_hub)
    assert session.login("demo", USERS["demo"][0]).status_code == 200
    session.start_server("demo", timeout=120, options={"partition": "cpu", "memory_gb": 2, "account": "astro-dev"})
    session_id = condor.jobs()["demo"]["ClusterId"]
    workers_name = f"{condor.job_name}-dask-{session_id}"
    listed = session.get("/user/demo/gateway/api/dask/presets").json()
    assert listed["backend"] == "condor" and listed["presets"]["small"]["max_workers"] == MAX_DASK_WORKERS
    kernel = RemoteKernel(session, "demo")
    kernel.start()
    try:
        submits = condor.calls("condor_submit")
        out = await kernel.execute(START_CLUSTER.format(n=4) + textwrap.dedent("""
            print(json.dumps({
                "sum": client.submit(sum, range(10)).result(),
                "workers": len(client.scheduler_info()["workers"]),
                "address": cluster.scheduler_address,
                "link": cluster.dashboard_link,
            }))
        """))
        result = json.loads(out.strip().splitlines()[-1])
        assert result["sum"] == 45 and result["workers"] == 4
        assert result["address"].startswith("tls://127.0.0.1:"), result["address"]
        # 4 workers, 2 per job: 2 condor_submit calls by the kernel, as the user
        calls = condor.condor_submit.lines()[submits:]
        assert len(calls) == 2 and {call[0] for call in calls} == {"demo"}, calls
        ads = worker_ads(condor, workers_name)
        assert len(ads) == 2, ads
        for ad in ads:
            assert ad["Owner"] == "demo" and ad["JobStatus"] == 2
            assert (ad["AcctGroup"], ad["AcctGroupUser"]) == ("astro-dev", "demo")
            assert ad["GatewayUser"] == "science-gateway=science-gateway user=demo dask=small"
        # the dashboard through the user's server and the hub's proxy
        assert result["link"].startswith("/user/demo/proxy/"), result["link"]
        assert session.get(result["link"]).status_code == 200

        # beyond the group's limit: a clear error, nothing submitted
        submits = condor.calls("condor_submit")
        with pytest.raises(KernelError, match="allows at most 4 workers for your groups"):
            await kernel.execute("cluster.scale(6)")
        assert condor.calls("condor_submit") == submits

        # close: the worker jobs leave the queue
        await kernel.execute("client.close(); cluster.close()")
        wait_for(lambda: not worker_ads(condor, workers_name), 60, what="worker jobs to end after close()")

        # a kernel shut down cleanly closes its clusters on the way out
        await kernel.execute(START_CLUSTER.format(n=2))
        assert len(worker_ads(condor, workers_name)) == 1
        kernel.shutdown()
        wait_for(lambda: not worker_ads(condor, workers_name), 60, what="worker jobs to end with the kernel")

        # workers of a session that stops are removed with it
        kernel.start()
        await kernel.execute(START_CLUSTER.format(n=2))
        assert len(worker_ads(condor, workers_name)) == 1
    finally:
        session.stop_server("demo")
    wait_for(lambda: "demo" not in condor.jobs(), 60, what="the session job to end")
    wait_for(lambda: not worker_ads(condor, workers_name), 60, what="the session's workers to be removed")
