"""The builders and the shared poller against the real pool (no hub): what a job really receives,
one schedd query for many lookups, and the last snapshot kept while the schedd cannot be reached."""

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sgtest.hub import wait_for

from science_gateway.core.policy import ResourceRequest
from science_gateway.spawners.condor_submit import build_env_file, build_submit_description, parse_cluster_id
from science_gateway.spawners.poller import UNKNOWN

pytestmark = [pytest.mark.condor]

ODD_ARGS = ["a b", "it's", 'say "hi"', "$(HOME)", "$HOME", "`id`", "; rm -rf /", "-c"]


@pytest.fixture
def poller(condor, monkeypatch):
    monkeypatch.setenv("CONDOR_CONFIG", condor.config)
    import htcondor

    from science_gateway.spawners.condor import CondorQueuePoller

    htcondor.reload_config()
    return CondorQueuePoller(job_name=condor.job_name, interval=3600, fast_interval=0.2, timeout=5)


def submit_as(condor, user: str, command: list[str], env: dict) -> tuple[str, Path]:
    """A job built by the gateway's builders, submitted as ``user`` through sudo (as the spawner does)."""
    home = Path(f"~{user}").expanduser()
    env_file = home / ".science-gateway" / "condor" / f"{condor.job_name}-test.env"
    prefix = ["/usr/bin/sudo", "-n", "-u", user, "--preserve-env=CONDOR_CONFIG"]
    run_env = {"PATH": "/usr/bin:/bin", "CONDOR_CONFIG": condor.config}
    subprocess.run([*prefix, "/bin/sh", "-c", 'umask 077 && mkdir -p -- "${1%/*}" && cat > "$1"', "sg", str(env_file)],
                   input=build_env_file(env), text=True, check=True, env=run_env, cwd="/tmp", timeout=30)
    output = home / f".{condor.job_name}-$(ClusterId).out"
    description = build_submit_description(
        ResourceRequest(partition="cpu", cores=1, memory_gb=1, gpus=0, walltime_hours=1),
        command=command, env_file=str(env_file), job_name=condor.job_name, identity=user,
        gateway="science-gateway", unix_user=user, workdir=str(home), output=str(output),
    )
    out = subprocess.run([*prefix, condor.condor_submit.path, "-terse"], input=description, text=True,
                         capture_output=True, env=run_env, cwd="/tmp", timeout=60)
    assert out.returncode == 0, out.stderr
    job_id = parse_cluster_id(out.stdout)
    return job_id, Path(str(output).replace("$(ClusterId)", job_id.split(".")[0]))


def test_a_job_gets_exactly_its_arguments_and_environment_and_runs_as_its_user(condor):
    script = "import json, os, sys; print(json.dumps([os.getuid(), sys.argv[1:], os.environ.get('ODD')]))"
    env = {"ODD": "it's $HOME `id` \"q\"", "PATH": "/usr/bin:/bin"}
    job_id, output = submit_as(condor, "astro1", ["/usr/bin/python3", "-c", script, *ODD_ARGS], env)
    wait_for(lambda: output.exists() and output.read_text().strip(), 90, interval=0.5, what=f"job {job_id}'s output")
    uid, args, odd = json.loads(output.read_text().strip().splitlines()[-1])
    import pwd

    assert uid == pwd.getpwnam("astro1").pw_uid
    assert args == ODD_ARGS
    assert odd == env["ODD"]
    # the launcher deleted the env file; the job ad holds no environment
    assert not list((Path("~astro1").expanduser() / ".science-gateway" / "condor").glob(f"{condor.job_name}-*"))
    output.unlink()


async def test_one_schedd_query_for_many_lookups_and_the_last_snapshot_survives_trouble(condor, poller):
    job_id, output = submit_as(condor, "astro2", ["/bin/sleep", "300"], {"PATH": "/usr/bin:/bin"})
    try:
        poller.watch(job_id)  # submitted before the first snapshot: it must be in it
        infos = await asyncio.gather(*(poller.lookup(job_id) for _ in range(20)))
        assert poller.calls == 1
        assert all(info is not UNKNOWN and info.owner == "astro2" for info in infos)
        # the schedd becomes unreachable: the last snapshot answers, and the trouble is in words
        poller.collector, poller._location = "127.0.0.1:9", None
        await poller.refresh()
        assert poller.last_error.startswith("the schedd query failed"), poller.last_error
        assert "HTCondor is not answering since" in poller.trouble()
        info = await poller.lookup(job_id)
        assert info is not UNKNOWN and info is not None and info.owner == "astro2"
        # reachable again: a removed job is seen as finished, then gone
        poller.collector, poller._location = "", None
        condor.remove(job_id)
        await poller.refresh()
        info = await poller.lookup(job_id)
        assert info is None or info.finished, info
        assert poller.trouble() == ""
    finally:
        poller.unwatch(job_id)
        condor.run("condor_rm", job_id, check=False)
        output.unlink(missing_ok=True)
