"""Scheduler faults injected while users have servers, on the real Slurm and a real JupyterHub.

Each fault loses no server, and the spawn page of a pending spawn says what is happening while it
lasts: ``squeue`` hanging past the poller's timeout (a wrapper, nothing shared is touched), the
Slurm controller stopped and started again, and the only node drained (a spawn then fails early
with the node's reason instead of waiting out its timeout). The controller and the node are
shared with every other test: those blocks are short and always restored
(:meth:`sgtest.slurm.SlurmFixture.controller_stopped`, :meth:`~sgtest.slurm.SlurmFixture.node_drained`).

The hub restart with many servers is in tests/slurm/test_slurm_hub.py.
"""

import subprocess
import time

import pytest
from sgtest.hub import HubSession, RunningHub, wait_for
from sgtest.slurm import USERS

pytestmark = [pytest.mark.slurm, pytest.mark.hub]

TROUBLE = "Slurm is not answering since"


@pytest.fixture(scope="module")
def faults_hub(slurm, tmp_path_factory):
    # a spawn that fails within the hub's slow_spawn_timeout (10 s) fails the POST itself: give
    # the spawn page time to show the node's state first
    config = slurm.hub_config(poller={"interval": 1, "timeout": 3}, nodes_unavailable_timeout=12)
    with RunningHub(tmp_path_factory.mktemp("faultshub"), config=config) as hub:
        yield hub


@pytest.fixture(scope="module")
def held_hub(slurm, tmp_path_factory):
    """A hub whose jobs are submitted held (``sbatch --hold``): each pends (``JobHeldUser``) until
    the test releases it, whatever else runs on the shared node."""
    config = slurm.hub_config(poller={"interval": 1, "timeout": 3}, extra_sbatch_args=["--hold"])
    with RunningHub(tmp_path_factory.mktemp("heldhub"), config=config) as hub:
        yield hub


def login(hub, name) -> HubSession:
    session = HubSession(hub)
    r = session.login(name, USERS[name][0])
    assert r.status_code == 200, r.text[:300]
    return session


def message_has(text):
    return lambda event: text in event.get("message", "")


def release(slurm, name):
    """Release ``name``'s held job once Slurm has it; return its id."""
    def held():
        job = slurm.jobs().get(name, {})
        return job.get("job_id") if job.get("state") == "PENDING" else None

    job_id = wait_for(held, 90, what=f"{name}'s held job")
    subprocess.run(["scontrol", "release", job_id], check=True, timeout=30)
    return job_id


def request_server(session, name, options=None):
    r = session.api(f"/users/{name}/server", method="POST", json=options or {"memory_gb": 1})
    assert r.status_code == 202, r.text


@pytest.mark.parametrize("fault", ["squeue hangs", "controller restarts"])
def test_scheduler_trouble_keeps_servers_and_the_pending_spawn_says_so(slurm, held_hub, fault):
    demo, waiting, astro1 = (login(held_hub, name) for name in ("demo", "astro2", "astro1"))
    sessions = {"demo": demo, "astro2": waiting, "astro1": astro1}
    for name, session in sessions.items():
        session.ensure_stopped(name)
    try:
        request_server(demo, "demo")
        release(slurm, "demo")
        wait_for(lambda: demo.server_status("demo") is not None, 120, interval=0.5, what="demo's server")
        request_server(waiting, "astro2")
        pending = waiting.progress("astro2", until=message_has("waiting for JobHeldUser"), timeout=60)
        queued = pending[-1]["message"]

        def check_during_the_fault():
            # a spawn asked for now: it waits, and says why
            request_server(astro1, "astro1")
            events = waiting.progress("astro2", until=message_has(TROUBLE), timeout=30)
            message = events[-1]["message"]
            # what the queue said last is still shown, with the trouble in front of it
            assert "No server is stopped" in message and queued in message, message
            # the hub polls every 2 s: several polls later the running server is still there
            time.sleep(6)
            assert demo.server("demo").get("ready") and demo.identity("demo") == "demo"
            assert waiting.server("astro2").get("pending") == "spawn"
            # the new spawn: sbatch cannot reach the controller (and is repeated), or squeue cannot say
            says = "submitting your job again" if fault == "controller restarts" else TROUBLE
            events = astro1.progress("astro1", until=message_has(says), timeout=40)
            assert not events[-1].get("failed"), events[-1]

        if fault == "squeue hangs":
            slurm.set_squeue_mode("hang")
            try:
                check_during_the_fault()
            finally:
                slurm.set_squeue_mode("ok")
        else:
            with slurm.controller_stopped():
                check_during_the_fault()
        # it answers again: the message goes, and both spawns go on once their jobs may run
        waiting.progress("astro2", until=lambda e: e.get("message") == queued, timeout=60)
        for name in ("astro1", "astro2"):
            release(slurm, name)
            assert sessions[name].progress(name)[-1].get("ready"), f"{name}'s spawn did not finish"
        for name, session in sessions.items():
            assert session.server_status(name) is not None and session.identity(name) == name, name
    finally:
        slurm.set_squeue_mode("ok")
        for name, session in sessions.items():
            session.ensure_stopped(name)


def test_a_drained_node_fails_the_spawn_early_with_its_reason_and_keeps_running_servers(slurm, faults_hub):
    demo, astro1 = login(faults_hub, "demo"), login(faults_hub, "astro1")
    demo.ensure_stopped("demo")
    astro1.ensure_stopped("astro1")
    demo.start_server("demo", options={"memory_gb": 1}, timeout=120)
    sinfo_before = slurm.calls("sinfo")
    try:
        with slurm.node_drained("Kill task failed (sgtest)"):
            started = time.monotonic()
            r = astro1.api("/users/astro1/server", method="POST", json={"memory_gb": 1})
            assert r.status_code == 202, r.text
            events = astro1.progress("astro1", timeout=60)
            took = time.monotonic() - started
            # the node is named with its reason while the spawn waits, then the spawn fails with it
            waiting = [e["message"] for e in events if "It cannot start" in e.get("message", "")]
            assert waiting and f"node {slurm.node} is drain" in waiting[-1], events
            assert "(Kill task failed (sgtest))" in waiting[-1], waiting[-1]
            assert events[-1].get("failed"), events[-1]
            failed = events[-1]["message"]
            assert "no node of partition cpu takes jobs now" in failed and "Kill task failed (sgtest)" in failed
            assert took < 60, f"the spawn took {took:.0f} s to fail"  # not the start_timeout of 600 s
            # its job was cancelled; the running server goes on
            wait_for(lambda: "astro1" not in slurm.jobs(), 30, what="astro1's job to be cancelled")
            assert not astro1.server("astro1")
            assert demo.server("demo").get("ready") and demo.identity("demo") == "demo"
        assert slurm.calls("sinfo") > sinfo_before
        # the node is back: the next spawn works
        astro1.start_server("astro1", options={"memory_gb": 1}, timeout=120)
        assert astro1.identity("astro1") == "astro1"
    finally:
        demo.ensure_stopped("demo")
        astro1.ensure_stopped("astro1")
    wait_for(lambda: not {"demo", "astro1"} & set(slurm.jobs()), 60, what="the jobs to leave the queue")


def test_the_test_slurm_does_not_drain_itself_when_a_loaded_node_is_slow_to_kill():
    """scripts/services/slurm's slurm.conf: processes of a job may take long to die on a loaded
    machine before slurmd drains the node ("Kill task failed"), as Slurm's docs advise."""
    from sgtest.slurm import SLURM_SERVICE

    conf = subprocess.run([str(SLURM_SERVICE), "config"], capture_output=True, text=True, check=True, timeout=30)
    settings = dict(line.split("=", 1) for line in conf.stdout.splitlines() if "=" in line and line[0] != "#")
    unkillable = int(settings["UnkillableStepTimeout"])
    message = int(settings.get("MessageTimeout", "10"))
    assert unkillable >= 5 * message and unkillable >= 180, (unkillable, message)
