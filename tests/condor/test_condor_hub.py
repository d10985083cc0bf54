"""Real JupyterHub + a real HTCondor pool: servers as jobs, policy checks at the REST API, one
schedd query for all users, re-adoption after a hub restart, removed jobs noticed.

Needs scripts/services/htcondor (started) and configurable-http-proxy on PATH.
"""

import time

import pytest
from sgtest.condor import USERS
from sgtest.hostile import HOSTILE
from sgtest.hub import HubSession, RunningHub, restartable_hub, wait_for

pytestmark = [pytest.mark.condor, pytest.mark.hub]


@pytest.fixture(scope="module")
def condor_hub(condor, tmp_path_factory):
    with RunningHub(tmp_path_factory.mktemp("condorhub"), config=condor.hub_config(), env=condor.hub_env()) as hub:
        yield hub


def login(hub, name) -> HubSession:
    session = HubSession(hub)
    r = session.login(name, USERS[name][0])
    assert r.status_code == 200, r.text[:300]
    return session


def test_servers_run_as_jobs_of_their_users_and_answer(condor, condor_hub):
    demo, astro1 = login(condor_hub, "demo"), login(condor_hub, "astro1")
    try:
        demo.start_server("demo", timeout=120,
                          options={"partition": "cpu", "cores": 1, "memory_gb": 2, "account": "astro-dev"})
        astro1.start_server("astro1", timeout=120, options={"partition": "cpu", "memory_gb": 1})
        # /user/NAME/api/status through the hub's proxy: 200, and each answers as its own user
        assert demo.server_status("demo") is not None
        assert astro1.server_status("astro1") is not None
        assert demo.identity("demo") == "demo" and astro1.identity("astro1") == "astro1"
        assert demo.get("/user/astro1/api/status", allow_redirects=False).status_code != 200

        jobs = condor.jobs()
        assert jobs["demo"]["JobStatus"] == 2 and jobs["astro1"]["JobStatus"] == 2
        assert jobs["demo"]["GatewayUser"] == "demo" and jobs["demo"]["GatewayJob"] == condor.job_name
        assert (jobs["demo"]["AcctGroup"], jobs["demo"]["AcctGroupUser"]) == ("astro-dev", "demo")
        assert (jobs["demo"]["RequestCpus"], jobs["demo"]["RequestMemory"]) == (1, 2048)
        assert jobs["astro1"]["AcctGroup"] == "astro-2024"  # the group's first account
        # the walltime (astro's default on cpu) ends the job; the job runs in the user's home
        assert "JobCurrentStartDate" in jobs["demo"]["PeriodicRemove"], jobs["demo"]["PeriodicRemove"]
        assert jobs["demo"]["Iwd"] == "/home/demo"
        # the job ad, which every pool user can read, holds no environment (the API token)
        for ad in jobs.values():
            assert "JUPYTERHUB_API_TOKEN" not in str(ad.get("Environment", "")) + str(ad.get("Env", ""))
        # condor_submit ran as the user, with no variable of the job's or the hub's but CONDOR_CONFIG
        assert [line[0] for line in condor.condor_submit.lines()[-2:]] == ["demo", "astro1"]
        names = condor.condor_submit.env_names()[-1]
        assert "JUPYTERHUB_API_TOKEN" not in names and "JUPYTERHUB_CRYPT_KEY" not in names
        assert "CONDOR_CONFIG" in names
    finally:
        demo.ensure_stopped("demo")
        astro1.ensure_stopped("astro1")
    wait_for(lambda: not {"demo", "astro1"} & set(condor.jobs()), 60, what="the jobs to leave the queue")
    # the stop removed each job as its owner, with the configured condor_rm
    assert {line[0] for line in condor.condor_rm.lines()} >= {"demo", "astro1"}


@pytest.mark.parametrize("options", HOSTILE)
def test_hostile_rest_options_never_reach_the_schedd(condor, condor_hub, options):
    session = login(condor_hub, "demo")
    session.ensure_stopped("demo")
    before = condor.calls("condor_submit")
    r = session.api("/users/demo/server", method="POST", json=options)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    message = r.json()["message"]
    assert any(hint in message for hint in ("allowed", "whole number", "must be")), message
    assert condor.calls("condor_submit") == before
    assert "demo" not in condor.jobs()
    assert not session.server("demo")


def test_batchspawner_route_is_closed_on_a_condor_hub(condor, condor_hub):
    """batchspawner's /hub/api/batchspawner sets any spawner attribute for a server token: closed,
    as for the Slurm spawner (the hub created a CondorSpawner at start-up)."""
    import requests
    from sgtest.notebooks import api_token

    session = login(condor_hub, "astro3")
    token = api_token(session, "astro3", note="a user's token")
    url = f"{condor_hub.url}/hub/api/batchspawner"
    for headers in ({"Authorization": f"token {token}"}, {}):
        for method in ("POST", "GET"):
            r = requests.request(method, url, json={"condor_submit_path": "/bin/sh"}, headers=headers, timeout=30)
            assert r.status_code == 404, (method, r.status_code, r.text[:200])


def test_idle_reason_on_the_spawn_page_and_a_removed_job_fails_the_spawn(condor, condor_hub):
    session = login(condor_hub, "astro2")
    session.ensure_stopped("astro2")
    # `long` maps to a requirement no slot meets: the job stays idle
    r = session.api("/users/astro2/server", method="POST", json={"partition": "long", "memory_gb": 1})
    assert r.status_code == 202, r.text
    events = session.progress("astro2", until=lambda e: "idle in the HTCondor queue" in e.get("message", ""),
                              timeout=60)
    assert "for partition long" in events[-1]["message"], events
    job_id = next(f"{ad['ClusterId']}.{ad['ProcId']}" for ad in condor.ads() if ad["Owner"] == "astro2")
    condor.remove(job_id)  # someone else removes it: the spawn fails and says how the job ended
    events = session.progress("astro2")
    assert events[-1].get("failed"), events
    assert f"Job {job_id} ended: removed" in events[-1]["message"], events[-1]
    wait_for(lambda: not session.server("astro2"), 60, what="the failed server to be cleared")


def test_a_job_removed_under_a_running_server_is_noticed(condor, condor_hub):
    session = login(condor_hub, "astro3")
    session.ensure_stopped("astro3")
    session.start_server("astro3", options={"memory_gb": 1}, timeout=120)
    job_id = next(f"{ad['ClusterId']}.{ad['ProcId']}" for ad in condor.ads() if ad["Owner"] == "astro3")
    condor.remove(job_id)
    # the poller's next snapshot (2 s) and the hub's next poll (2 s) drop the server
    wait_for(lambda: not session.server("astro3"), 60, interval=0.5, what="the hub to notice the removed job")


def test_restart_readopts_servers_with_one_query_and_drops_the_one_removed_meanwhile(condor, tmp_path_factory):
    config = condor.hub_config(poller={"interval": 600})
    config["JupyterHub"]["log_level"] = "DEBUG"  # the poller logs each query at debug
    make_hub = restartable_hub(tmp_path_factory.mktemp("restart"), config, env=condor.hub_env())
    names = ["demo", "astro1", "astro2"]
    with make_hub() as hub:
        for name in names:
            r = login(hub, name).api(f"/users/{name}/server", method="POST", json={"memory_gb": 1})
            assert r.status_code in (201, 202), r.text
        for name in names:
            session = login(hub, name)
            wait_for(lambda: session.server_status(name) is not None, 120, interval=0.5, what=f"{name}'s server")
    # the hub is down, the jobs are not (cleanup_servers=False); one is removed meanwhile
    jobs = condor.jobs()
    assert {n: jobs[n]["JobStatus"] for n in names} == {n: 2 for n in names}
    condor.remove(f"{jobs['astro2']['ClusterId']}.{jobs['astro2']['ProcId']}")
    submits = condor.calls("condor_submit")
    hub = make_hub()
    earlier = len(hub.log_text())  # the log file is appended to by each run
    with hub:
        sessions = {name: login(hub, name) for name in names}
        for name in ["demo", "astro1"]:
            wait_for(lambda: sessions[name].server_status(name) is not None, 60, interval=0.5,
                     what=f"{name}'s re-adopted server")
            assert sessions[name].identity(name) == name
        wait_for(lambda: not sessions["astro2"].server("astro2"), 60, what="the removed job's server to go")
        assert condor.calls("condor_submit") == submits  # re-adopted, not started again
        queries = [line for line in hub.log_text()[earlier:].splitlines() if "schedd query:" in line]
        # one query for all three servers at start-up (interval 600: no periodic one yet)
        assert len(queries) == 1, queries
        for name in ["demo", "astro1"]:
            sessions[name].stop_server(name)
    wait_for(lambda: not set(names) & set(condor.jobs()), 60, what="the jobs to leave the queue")


def test_a_held_job_shows_its_hold_reason_then_fails_the_spawn_and_is_removed(condor, tmp_path_factory):
    # an output file the job's user cannot create: HTCondor holds the job, saying why
    config = condor.hub_config(job_output="/proc/sg-no-such-dir/out-$(ClusterId).log", held_timeout=15)  # past the hub's slow_spawn_timeout (10 s): the POST answers 202 first
    with RunningHub(tmp_path_factory.mktemp("held"), config=config, env=condor.hub_env()) as hub:
        session = login(hub, "astro1")
        r = session.api("/users/astro1/server", method="POST", json={"memory_gb": 1})
        assert r.status_code == 202, r.text
        events = session.progress("astro1", timeout=90)
        messages = [e.get("message", "") for e in events]
        assert any(" is held for partition cpu: Error from " in m for m in messages), messages
        assert events[-1].get("failed"), events[-1]
        assert "HTCondor holds job" in events[-1]["message"] and "/proc/sg-no-such-dir" in events[-1]["message"]
        wait_for(lambda: not session.server("astro1"), 60, what="the failed server to be cleared")
    # the hub's clean-up after the failed start removed the held job
    wait_for(lambda: "astro1" not in condor.jobs(), 60, what="the held job to be removed")
