"""Real JupyterHub + real Slurm: servers as jobs, policy checks at the REST API, one squeue for all.

Needs scripts/services/slurm (started, with its test users) and configurable-http-proxy on PATH.
"""

import subprocess
import time

import pytest
import requests
from sgtest.slurm import USERS
from sgtest.hostile import HOSTILE
from sgtest.hub import HubSession, ManyServers, RunningHub, named_servers, restartable_hub, wait_for
from sgtest.notebooks import api_token

pytestmark = [pytest.mark.slurm, pytest.mark.hub]


@pytest.fixture(scope="module")
def slurm_hub(slurm, tmp_path_factory):
    with RunningHub(tmp_path_factory.mktemp("slurmhub"), config=slurm.hub_config()) as hub:
        yield hub


def login(hub, name) -> HubSession:
    session = HubSession(hub)
    r = session.login(name, USERS[name][0])
    assert r.status_code == 200, r.text[:300]
    return session


def test_servers_run_as_jobs_and_answer_for_the_right_user(slurm, slurm_hub):
    demo, astro1 = login(slurm_hub, "demo"), login(slurm_hub, "astro1")
    try:
        check_two_servers(slurm, slurm_hub, demo, astro1)
    finally:
        demo.ensure_stopped("demo")
        astro1.ensure_stopped("astro1")
    # the form remembers each user's last (allowed) choices
    form = demo.get("/hub/spawn").text
    assert 'name="memory_gb" value="2" min="1" max="4"' in form
    assert '<option value="astro-dev" selected>astro-dev</option>' in form
    assert '<option value="debug"' not in form
    wait_for(lambda: not {"demo", "astro1"} & set(slurm.jobs()), 60, what="the jobs to leave the queue")


def check_two_servers(slurm, slurm_hub, demo, astro1):
    demo.start_server("demo", options={"partition": "cpu", "cores": 1, "memory_gb": 2, "account": "astro-dev"})
    # a one-click spawn URL with the options in the query
    r = astro1.get("/hub/spawn?partition=long&cores=1&memory_gb=1&walltime_hours=100")
    assert r.status_code == 200, r.text[:300]
    wait_for(lambda: astro1.server_status("astro1") is not None, 120, interval=0.5, what="astro1's server")

    assert demo.server_status("demo") is not None
    assert demo.identity("demo") == "demo"
    assert astro1.identity("astro1") == "astro1"
    # each person reaches only their own server
    assert demo.get("/user/astro1/api/status", allow_redirects=False).status_code != 200

    jobs = slurm.jobs()
    assert jobs["demo"]["state"] == "RUNNING" and jobs["astro1"]["state"] == "RUNNING"
    assert jobs["demo"]["name"] == slurm.job_name
    assert jobs["demo"]["comment"] == "science-gateway=science-gateway user=demo"
    assert (jobs["demo"]["partition"], jobs["demo"]["account"], jobs["demo"]["cpus"], jobs["demo"]["mem"]) == (
        "cpu", "astro-dev", "1", "2G",
    )
    assert (jobs["astro1"]["partition"], jobs["astro1"]["account"]) == ("long", "astro-2024")


@pytest.mark.parametrize("options", HOSTILE)
def test_hostile_rest_options_are_refused_before_sbatch(slurm, slurm_hub, options):
    session = login(slurm_hub, "demo")
    session.ensure_stopped("demo")
    before = slurm.calls("sbatch")
    r = session.api("/users/demo/server", method="POST", json=options)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    message = r.json()["message"]
    assert any(hint in message for hint in ("allowed", "whole number", "must be")), message
    assert slurm.calls("sbatch") == before
    assert "demo" not in slurm.jobs()
    assert not session.server("demo")


def test_queue_reason_in_progress_and_a_cancelled_job_fails_with_its_reason(slurm, slurm_hub):
    blocker = slurm.start_blocker()
    try:
        session = login(slurm_hub, "student")
        session.ensure_stopped("student")
        r = session.api("/users/student/server", method="POST", json={"partition": "debug"})
        assert r.status_code == 202, r.text
        wait_for(lambda: slurm.jobs().get("student", {}).get("state") == "PENDING", 60, what="a pending job")
        job_id = slurm.jobs()["student"]["job_id"]
        # what the pending page shows: the queue's reason
        events = session.progress("student", until=lambda e: "waiting for" in e.get("message", ""), timeout=60)
        assert f"Job {job_id} is queued in partition debug, waiting for " in events[-1]["message"], events
        # the job is cancelled by someone else: the spawn fails and says why
        subprocess.run(["scancel", job_id], check=True, timeout=30)
        events = session.progress("student")
        assert events[-1].get("failed"), events
        assert f"Job {job_id} ended: CANCELLED" in events[-1]["message"], events[-1]
        wait_for(lambda: not session.server("student"), 60, what="the failed server to be cleared")
    finally:
        subprocess.run(["scancel", blocker], timeout=30, check=False)


def test_a_user_in_no_policy_group_gets_403(slurm, tmp_path_factory):
    config = slurm.hub_config()
    config["ResourcePolicy"] = {"groups": {"students": config["ResourcePolicy"]["groups"]["students"]}}
    before = slurm.calls("sbatch")
    with RunningHub(tmp_path_factory.mktemp("nogroup"), config=config) as hub:
        session = login(hub, "demo")
        r = session.api("/users/demo/server", method="POST", json={})
        assert r.status_code == 403, r.text
        assert "none of your groups (astro) may start servers" in r.json()["message"]
        assert slurm.calls("sbatch") == before


def test_restart_readopts_servers_and_scheduler_trouble_drops_nothing(slurm, tmp_path_factory):
    # only the start-up snapshot, no periodic calls
    make_hub = restartable_hub(tmp_path_factory.mktemp("restart"), slurm.hub_config(poller={"interval": 600}))

    names = ["demo", "astro1", "astro2", "astro3"]
    with make_hub() as hub:
        for name in names:
            r = login(hub, name).api(f"/users/{name}/server", method="POST", json={"memory_gb": 1})
            assert r.status_code in (201, 202), r.text
        for name in names:
            session = login(hub, name)
            wait_for(lambda: session.server_status(name) is not None, 120, interval=0.5, what=f"{name}'s server")
    # the hub is down; the jobs are not (cleanup_servers=False); one job dies meanwhile
    jobs = slurm.jobs()
    assert {n: jobs[n]["state"] for n in names} == {n: "RUNNING" for n in names}
    subprocess.run(["scancel", jobs["astro3"]["job_id"]], check=True, timeout=30)

    before = slurm.calls("squeue")
    with make_hub() as hub:
        # one squeue for all four servers at start-up, not one per server
        assert slurm.calls("squeue") - before == 1
        sessions = {name: login(hub, name) for name in names}
        for name in ["demo", "astro1", "astro2"]:
            # the hub may finish re-checking servers in the background after it answers /health
            wait_for(lambda: sessions[name].server_status(name) is not None, 60, interval=0.5,
                     what=f"{name}'s re-adopted server")
            assert sessions[name].identity(name) == name
        # the job that died while the hub was down was cleaned up: no server, and a new start works
        assert not sessions["astro3"].server("astro3")
        sessions["astro3"].start_server("astro3", options={"memory_gb": 1}, timeout=120)

    # injected trouble at start-up: squeue fails, then hangs; every live server is kept
    for mode in ("fail", "hang"):
        slurm.set_squeue_mode(mode)
        with make_hub() as hub:
            for name in names:
                session = login(hub, name)
                wait_for(lambda: session.server_status(name) is not None, 60, interval=0.5,
                         what=f"{name}'s server with squeue {mode}")
                assert session.identity(name) == name
            # many hub polls (poll_interval=2) and squeue attempts later, all still there
            time.sleep(8)
            for name in names:
                assert login(hub, name).server(name).get("ready"), (mode, name)
            slurm.set_squeue_mode("ok")
            if mode == "hang":
                for name in names:
                    login(hub, name).stop_server(name)
    wait_for(lambda: not set(names) & set(slurm.jobs()), 60, what="the jobs to leave the queue")


# -- batchspawner's route: closed on the real hub -------------------------------------------------

KERNEL_POST = """
import json, os, urllib.error, urllib.request
body = json.dumps({payload}).encode()
req = urllib.request.Request(os.environ["JUPYTERHUB_API_URL"] + "/batchspawner", data=body, method="POST",
                             headers={{"Authorization": "token " + os.environ["JUPYTERHUB_API_TOKEN"],
                                      "Content-Type": "application/json"}})
try:
    print(urllib.request.urlopen(req, timeout=30).status)
except urllib.error.HTTPError as e:
    print(e.code)
"""


def hostile_payload(marker) -> dict:
    """What a user's kernel would post to make the hub run a program of theirs at the next stop/start."""
    run = ["/bin/sh", "-c", f"id > {marker}", "x"]
    return {
        "user_command_prefix": run,
        "scancel_path": "/bin/sh",
        "sbatch_path": "/bin/sh",
        "cmd": run,
        "min_uid": 0,
        "job_account": "root",
        "port": 1,
    }


async def test_batchspawner_route_is_closed_and_a_payload_never_runs(slurm, slurm_hub):
    from sgtest.kernel import RemoteKernel

    marker = slurm.dir / "marker-batchspawner-api"
    payload = hostile_payload(marker)
    demo, astro1 = login(slurm_hub, "demo"), login(slurm_hub, "astro1")
    demo.ensure_stopped("demo")
    demo.start_server("demo", options={"memory_gb": 1}, timeout=120)
    job_id = slurm.jobs()["demo"]["job_id"]
    try:
        kernel = RemoteKernel(demo, "demo")
        kernel.start()
        # the reproduction: the user's own kernel posts with its own server token
        out = await kernel.execute(KERNEL_POST.format(payload=repr(payload)))
        assert out.strip() == "404", out
        token = (await kernel.execute("import os; print(os.environ['JUPYTERHUB_API_TOKEN'])")).strip()
        assert token
        url = f"{slurm_hub.url}/hub/api/batchspawner"
        other = api_token(astro1, "astro1", note="another user's token")
        for who, headers in [
            ("the server's own token", {"Authorization": f"token {token}"}),
            ("another user's token", {"Authorization": f"token {other}"}),
            ("no token", {}),
        ]:
            for method in ("POST", "GET", "PUT", "PATCH", "DELETE"):
                r = requests.request(method, url, json=payload, headers=headers, timeout=30)
                assert r.status_code == 404, (who, method, r.status_code, r.text[:200])
        # the token travelled to the job in the environment, never in sbatch's argv
        assert slurm.sbatch.lines() and not any(token in " ".join(call) for call in slurm.sbatch.lines())
    finally:
        demo.stop_server("demo")
    # the stop cancelled the job, as demo, with the configured scancel, and ran nothing else
    wait_for(lambda: "demo" not in slurm.jobs(), 60, what="demo's job to leave the queue")
    assert ["demo", job_id] in slurm.scancel.lines(), slurm.scancel.lines()
    assert not marker.exists()
    # and the next start is a normal one
    demo.start_server("demo", options={"memory_gb": 1}, timeout=120)
    assert demo.identity("demo") == "demo" and slurm.jobs()["demo"]["state"] == "RUNNING"
    demo.stop_server("demo")
    assert not marker.exists()
    wait_for(lambda: "demo" not in slurm.jobs(), 60, what="demo's job to leave the queue")


def test_commands_get_no_environment_of_the_hub(slurm, slurm_hub):
    """What reached sbatch (run as the user, who can read its /proc/PID/environ): the job's
    variables only, none of the hub's own (its crypt key, its config)."""
    session = login(slurm_hub, "astro2")
    session.ensure_stopped("astro2")
    session.start_server("astro2", options={"memory_gb": 1}, timeout=120)
    session.stop_server("astro2")
    names = slurm.sbatch.env_names()[-1]
    assert "JUPYTERHUB_API_TOKEN" in names
    # set in the hub's own environment by RunningHub: none may reach a command run as the user
    hub_only = {"JUPYTERHUB_CRYPT_KEY", "SCIENCE_GATEWAY_CONFIG", "SCIENCE_GATEWAY_BIND_URL"}
    assert not names & hub_only, names & hub_only
    assert not {n for n in names if n.startswith("CONFIGPROXY_")}, names
    assert "-E" not in slurm.sbatch.lines()[-1]


# -- the unix account from auth_state, and the floor ------------------------------------------------

MAPPED_AUTH = '''
from science_gateway.hub.demo_auth import DemoAuthenticator

UNIX = {"astro1": "astro2", "admin": "root", "student": "daemon"}


class MappedDemoAuthenticator(DemoAuthenticator):
    """The demo login plus auth_state["unix_account"], as the OIDC authenticators record it."""

    async def authenticate(self, handler, data):
        model = await super().authenticate(handler, data)
        if model:
            model["auth_state"] = {"unix_account": UNIX.get(model["name"], model["name"])}
        return model


c = get_config()  # noqa: F821
c.JupyterHub.authenticator_class = MappedDemoAuthenticator
c.Authenticator.enable_auth_state = True
'''


def test_jobs_run_as_the_auth_state_account_never_as_a_system_account(slurm, tmp_path_factory):
    state = tmp_path_factory.mktemp("unixaccount")
    auth = state / "mapped_auth.py"
    auth.write_text(MAPPED_AUTH)
    env = {"SCIENCE_GATEWAY_CONFIG": f"{state / 'test-site-config.yaml'}:{auth}"}
    with RunningHub(state, config=slurm.hub_config(), env=env) as hub:
        astro1 = login(hub, "astro1")
        astro1.start_server("astro1", options={"memory_gb": 1}, timeout=120)
        try:
            jobs = slurm.jobs()
            # hub user astro1's job is unix account astro2's, and it answers for astro1
            assert "astro1" not in jobs and jobs["astro2"]["state"] == "RUNNING"
            assert jobs["astro2"]["comment"] == "science-gateway=science-gateway user=astro1"
            assert astro1.identity("astro1") == "astro1"
            job_id = jobs["astro2"]["job_id"]
        finally:
            astro1.stop_server("astro1")
        wait_for(lambda: "astro2" not in slurm.jobs(), 60, what="astro2's job to leave the queue")
        assert ["astro2", job_id] in slurm.scancel.lines(), slurm.scancel.lines()

        # root and daemon: refused before sudo, with a message that says what to do
        for name in ("admin", "student"):
            session = login(hub, name)
            before = slurm.calls("sbatch")
            options = {"partition": "debug"} if name == "student" else {}
            r = session.api(f"/users/{name}/server", method="POST", json=options)
            assert r.status_code == 403, (name, r.status_code, r.text)
            assert "system account" in r.json()["message"] and "map" in r.json()["message"]
            assert slurm.calls("sbatch") == before
            assert not session.server(name)


# -- a hub restart with 20 running servers --------------------------------------------------------

#: 20 servers: 4 named servers each for 5 users (the test Slurm has a unix account per user)
MANY = named_servers(("demo", "admin", "astro1", "astro2", "astro3"), 4)


def test_restart_with_20_servers_readopts_all_with_no_orphan_and_no_burst_of_scheduler_calls(
    slurm, tmp_path_factory
):
    """20 of the smallest real servers (jupyterhub-singleuser without JupyterLab): all re-adopted
    after a hub restart with one squeue and no other scheduler call, then all stopped at once,
    leaving no job behind and the node in service."""
    config = slurm.hub_config(poller={"interval": 30}, environment=slurm.small_server_env())
    config["JupyterHub"].update(allow_named_servers=True, named_server_limit_per_user=4)
    make_hub = restartable_hub(tmp_path_factory.mktemp("restart20"), config)
    users = sorted({name for name, _ in MANY})
    with make_hub() as hub:
        many = ManyServers(hub, {name: login(hub, name) for name in users}, MANY)
        many.start_all({"memory_gb": 1})
        wait_for(many.all_ready, 300, interval=1, what="20 servers to be ready")
    job_ids = set(slurm.job_ids())
    assert len(job_ids) == len(MANY), job_ids

    scheduler = ("squeue", "sinfo", "sbatch", "scancel")
    before = {command: slurm.calls(command) for command in scheduler}
    started = time.monotonic()
    with make_hub() as hub:
        many = ManyServers(hub, {name: login(hub, name) for name in users}, MANY)
        wait_for(many.all_ready, 60, interval=0.5, what="the 20 re-adopted servers")
        many.check_each_answers_as_its_user()
        calls = {command: slurm.calls(command) - before[command] for command in scheduler}
        took = time.monotonic() - started
        # one squeue for all 20 at start-up, then the poller's own interval: no call per server
        assert calls["squeue"] <= 2 + int(took // 30), (calls, took)
        assert calls == {**calls, "sinfo": 0, "sbatch": 0, "scancel": 0}, calls
        assert set(slurm.job_ids()) == job_ids  # no job lost, none started twice
        # all stopped at once: every job leaves the queue (no orphan) and the node stays in service
        many.stop_all()
        wait_for(lambda: not slurm.job_ids(), 180, interval=1, what="the 20 jobs to leave the queue")
        wait_for(many.none_left, 60, what="the hub to drop the servers")
    assert {line[-1] for line in slurm.scancel.lines() if line[-1].isdigit()} >= job_ids
    assert not slurm.node_state().startswith("drain"), slurm.node_state()
