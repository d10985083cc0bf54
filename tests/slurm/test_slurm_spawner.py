"""The Slurm spawner with fakes at its edges (no hub, no Slurm): the closed batchspawner route, the
unix account and its floor, the commands' argv and environment, ports, declared state, the poller.

The same behaviour on the real hub and the real Slurm: tests/slurm/test_slurm_hub.py.
"""

import asyncio
import inspect
import pwd

import pytest
from jupyterhub.objects import Hub
from jupyterhub.spawner import SpawnException
from tornado import web
from traitlets.config import Config

import science_gateway.spawners.slurm as slurm_module
from science_gateway.core.commands import CommandError, CommandResult
from science_gateway.spawners.base import PolicySpawnerMixin
from science_gateway.spawners.poller import SlurmQueuePoller
from science_gateway.spawners.slurm import _PORTS_IN_USE, SlurmSpawner
from science_gateway.spawners.slurm_script import JobInfo


class Group:
    def __init__(self, name):
        self.name = name


class User:
    """What the spawner reads of JupyterHub's User."""

    def __init__(self, name, groups=("astro",)):
        self.name = name
        self.escaped_name = name
        self.groups = [Group(g) for g in groups]
        self.url = f"/user/{name}/"


class QuietPoller(SlurmQueuePoller):
    """A poller that never runs squeue: the job states come from ``jobs``."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.jobs = {}

    def watch(self, job_id, submitted_at=0.0, starting=False):
        self._watched[job_id] = submitted_at

    def unwatch(self, job_id):
        self._watched.pop(job_id, None)

    async def lookup(self, job_id):
        return self.jobs.get(job_id)

    def nodes_unavailable(self, info):
        return self.unavailable if info is not None and info.pending else ""

    unavailable = ""

    async def next_snapshot(self, timeout):
        await asyncio.sleep(0)


def config() -> Config:
    c = Config()
    c.ResourcePolicy.groups = {
        "astro": {"accounts": ["astro-2024"], "partitions": {"cpu": {"max_cores": 2, "max_memory_gb": 4}}}
    }
    return c


def make_spawner(name="demo", **traits) -> SlurmSpawner:
    spawner = SlurmSpawner(
        config=config(), user=User(name), hub=Hub(), api_token="secret-api-token-123", **traits
    )
    spawner.poller = QuietPoller(job_name="t")
    spawner.user_options = {}
    return spawner


@pytest.fixture(autouse=True)
def clean_ports():
    _PORTS_IN_USE.clear()
    yield
    _PORTS_IN_USE.clear()


@pytest.fixture
def commands(monkeypatch):
    """Every command the spawner runs: (argv, env, input); sbatch answers job 42."""
    calls = []

    async def fake_run_command(argv, *, input=None, env=None, timeout=30, check=True):
        calls.append((list(argv), dict(env or {}), input))
        out = "42\n" if any(a.endswith("sbatch") for a in argv) else ""
        return CommandResult(list(argv), 0, out, "")

    monkeypatch.setattr(slurm_module, "run_command", fake_run_command)
    return calls


# -- 1. batchspawner's route ------------------------------------------------------------------


@pytest.fixture
def in_use():
    """A hub that uses this spawner: one has been created."""
    return make_spawner()


def test_batchspawner_route_is_not_among_the_hubs_handlers(in_use):
    import batchspawner.api
    import jupyterhub.apihandlers
    import jupyterhub.handlers

    routes = jupyterhub.apihandlers.default_handlers + jupyterhub.handlers.default_handlers
    assert not [r for r in routes if r[1] is batchspawner.api.BatchSpawnerAPIHandler or "batchspawner" in r[0]]


@pytest.mark.parametrize("verb", ["get", "post", "put", "patch", "delete"])
def test_batchspawner_handler_answers_404_even_if_registered_elsewhere(in_use, verb):
    import batchspawner.api

    with pytest.raises(web.HTTPError) as e:
        getattr(batchspawner.api.BatchSpawnerAPIHandler, verb)(object())
    assert e.value.status_code == 404


def test_closing_the_route_again_changes_nothing(in_use):
    import jupyterhub.apihandlers

    before = list(jupyterhub.apihandlers.default_handlers)
    slurm_module.close_batchspawner_api()
    assert jupyterhub.apihandlers.default_handlers == before


ROUTE_STATE = """
import json, sys
from importlib.metadata import entry_points
import batchspawner.api, jupyterhub.apihandlers
from jupyterhub.objects import Hub

def state():
    handler = batchspawner.api.BatchSpawnerAPIHandler
    routes = [r[0] for r in jupyterhub.apihandlers.default_handlers if r[1] is handler]
    return {"routes": routes, "post": handler.post.__qualname__}

# what JupyterHub does at start-up (JupyterHub.classes) with every installed spawner
entry_points(group="jupyterhub.spawners", name="science-gateway-slurm")["science-gateway-slurm"].load()
loaded = state()
from science_gateway.spawners.slurm import SlurmSpawner
SlurmSpawner(user=None, hub=Hub())
print(json.dumps({"loaded": loaded, "used": state()}))
"""


def test_installing_the_package_leaves_stock_batchspawner_its_route():
    """JupyterHub imports every installed spawner at start-up: a hub that runs stock batchspawner
    with this package installed keeps the route its servers post their port to; the route goes
    only when a science-gateway-slurm spawner is created (a fresh interpreter: no spawner yet)."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", ROUTE_STATE], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["loaded"] == {"routes": ["/api/batchspawner"], "post": "BatchSpawnerAPIHandler.post"}
    assert result["used"]["routes"] == [] and result["used"]["post"] != "BatchSpawnerAPIHandler.post"


# -- 2. the shared core ------------------------------------------------------------------------


def test_policy_core_is_a_mixin_before_batchspawner():
    import batchspawner

    mro = SlurmSpawner.__mro__
    assert mro.index(PolicySpawnerMixin) < mro.index(batchspawner.SlurmSpawner)
    # start is the mixin's template (validate, then start_job); Slurm only implements start_job
    assert SlurmSpawner.start is PolicySpawnerMixin.start
    assert "start" not in vars(SlurmSpawner) and "start_job" in vars(SlurmSpawner)


async def test_start_validates_before_start_job(commands):
    spawner = make_spawner()
    spawner.user_options = {"cores": 64}
    with pytest.raises(SpawnException) as e:
        await spawner.start()
    assert e.value.status_code == 400 and "cores" in str(e.value)
    assert commands == []


# -- 3./4. the unix account and its floor ----------------------------------------------------------


async def test_unix_account_comes_from_auth_state_and_falls_back_to_the_username():
    spawner = make_spawner("astro1")
    assert spawner.unix_account_name() == "astro1"
    await spawner.run_auth_state_hook({"unix_account": "astro2", "voperson_id": "a@example.org"})
    assert spawner.unix_account_name() == "astro2"
    assert spawner.job_identity() == "a@example.org"
    await spawner.run_auth_state_hook(None)  # e.g. the demo login: no auth_state
    assert spawner.unix_account_name() == "astro1" and spawner.job_identity() == "astro1"


async def test_job_runs_as_the_auth_state_account(commands):
    spawner = make_spawner("astro1")
    await spawner.run_auth_state_hook({"unix_account": "astro2"})
    spawner.poller.jobs["42"] = JobInfo("42", "FAILED")  # start() submits, then sees the job end
    with pytest.raises(SpawnException):
        await spawner.start()
    argv, env, _ = commands[-1]
    home = pwd.getpwnam("astro2").pw_dir
    assert argv[:4] == ["/usr/bin/sudo", "-n", "-u", "astro2"]
    assert f"--chdir={home}" in argv and f"--output={home}/.science-gateway-slurm-%j.log" in argv
    assert (env["USER"], env["HOME"]) == ("astro2", home)
    spawner.job_id, spawner.job_account = "42", "astro2"
    assert spawner.get_state()["job_account"] == "astro2"
    # a stop (even after a hub restart: the account is in the state) cancels as that account
    restored = make_spawner("astro1")
    restored.load_state(spawner.get_state())
    await restored.stop()
    assert commands[-2][0][:4] == ["/usr/bin/sudo", "-n", "-u", "astro2"]
    assert commands[-2][0][-1] == "42"


@pytest.mark.parametrize(
    "account, why",
    [
        pytest.param("root", "system account", id="root"),
        pytest.param("daemon", "system account", id="daemon"),
        pytest.param("nobody-here-xyz", "there is no unix account", id="missing"),
        pytest.param("#0", "not a plain unix name", id="uid-syntax"),
        pytest.param("-u root", "not a plain unix name", id="option"),
    ],
)
async def test_system_and_odd_accounts_are_refused_before_sudo(commands, account, why):
    spawner = make_spawner("demo")
    await spawner.run_auth_state_hook({"unix_account": account})
    with pytest.raises(SpawnException) as e:
        await spawner.start()
    assert e.value.status_code == 403 and why in str(e.value), str(e.value)
    assert commands == []
    assert not _PORTS_IN_USE


def test_the_floor_is_a_setting():
    assert make_spawner().min_uid == 1000
    spawner = make_spawner(min_uid=0)
    assert spawner.checked_account("root").pw_uid == 0


# -- 1. what the commands get: argv and environment ------------------------------------------


async def test_sbatch_gets_the_jobs_environment_only_and_no_secret_in_argv(commands, monkeypatch):
    monkeypatch.setenv("CONFIGPROXY_AUTH_TOKEN", "proxy-secret")
    monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", "crypt-secret")
    monkeypatch.setenv("SLURM_CONF", "/etc/slurm/slurm.conf")
    spawner = make_spawner()
    spawner.resource_request = spawner.validated_request({})
    spawner.job_account = "demo"
    await spawner.submit_batch_script()
    argv, env, script = commands[-1]
    assert "-E" not in argv
    preserve = [a for a in argv if a.startswith("--preserve-env=")]
    export = [a for a in argv if a.startswith("--export=")]
    assert preserve and export
    job_names = set(export[0].removeprefix("--export=").split(","))
    assert set(preserve[0].removeprefix("--preserve-env=").split(",")) == job_names
    assert "JUPYTERHUB_API_TOKEN" in job_names
    assert env["JUPYTERHUB_API_TOKEN"] == "secret-api-token-123"
    # no value of a secret in argv or in the script; nothing of the hub's environment but SLURM_CONF
    assert not any("secret" in a for a in argv) and "secret" not in script
    assert "CONFIGPROXY_AUTH_TOKEN" not in env and "JUPYTERHUB_CRYPT_KEY" not in env
    assert env["SLURM_CONF"] == "/etc/slurm/slurm.conf"


async def test_scancel_gets_no_environment_of_the_hub(commands, monkeypatch):
    monkeypatch.setenv("CONFIGPROXY_AUTH_TOKEN", "proxy-secret")
    spawner = make_spawner()
    spawner.job_id, spawner.job_account = "42", "demo"
    await spawner.stop()
    (argv, env, _), (workers, _, _) = commands
    assert argv == ["/usr/bin/sudo", "-n", "-u", "demo", "/usr/bin/scancel", "42"]
    assert workers[:4] == ["/usr/bin/sudo", "-n", "-u", "demo"] and "--user=demo" in workers
    assert env == {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


async def test_secrets_are_not_logged(commands, caplog):
    spawner = make_spawner()
    spawner.resource_request = spawner.validated_request({})
    spawner.job_account = "demo"
    with caplog.at_level("DEBUG"):
        await spawner.submit_batch_script()
    assert caplog.records and "secret-api-token-123" not in caplog.text


# -- 6. ports -------------------------------------------------------------------------------------


async def test_port_released_when_sbatch_fails(monkeypatch):
    async def refuse(argv, **kwargs):
        raise CommandError(argv, 1, "", "sbatch: error: invalid partition")

    monkeypatch.setattr(slurm_module, "run_command", refuse)
    spawner = make_spawner()
    with pytest.raises(SpawnException, match="Slurm refused the job"):
        await spawner.start()
    assert not _PORTS_IN_USE


async def test_port_released_when_the_job_ends_before_the_server_starts(commands):
    spawner = make_spawner()
    spawner.poller.jobs["42"] = JobInfo("42", "FAILED", "NonZeroExitCode")
    with pytest.raises(SpawnException, match="Job 42 ended: FAILED"):
        await spawner.start()
    assert not _PORTS_IN_USE


async def test_port_released_when_start_fails_after_submit(commands, monkeypatch):
    spawner = make_spawner()

    async def broken(*args):
        raise RuntimeError("unexpected")

    monkeypatch.setattr(spawner, "query_job_status", broken)
    with pytest.raises(RuntimeError):
        await spawner.start()
    assert spawner.job_id == "42" and not _PORTS_IN_USE


async def test_a_job_whose_nodes_are_all_drained_fails_the_spawn_early_and_is_cancelled(commands):
    spawner = make_spawner(nodes_unavailable_timeout=0)
    spawner.poller.jobs["42"] = JobInfo("42", "PENDING", "ReqNodeNotAvail, UnavailableNodes:vm", partition="cpu")
    spawner.poller.unavailable = "node vm is drained (Kill task failed)"
    with pytest.raises(SpawnException) as failed:
        await spawner.start()
    message = str(failed.value)
    assert "no node of partition cpu takes jobs now (node vm is drained (Kill task failed))" in message
    assert "Job 42 was cancelled" in message and "another partition" in message
    assert spawner.job_id == "42"  # kept, so the hub's clean-up (stop) cancels the job
    await spawner.stop()
    assert commands[-2][0][-1] == "42" and commands[-2][0][-2].endswith("scancel")
    assert not _PORTS_IN_USE


async def test_the_spawn_page_says_why_the_job_waits_and_that_slurm_is_not_answering(commands):
    spawner = make_spawner()
    spawner.job_id = "42"
    spawner._job_info = JobInfo("42", "PENDING", "ReqNodeNotAvail, UnavailableNodes:vm", partition="cpu")
    spawner.poller.unavailable = "node vm is drained (Kill task failed)"
    message = spawner.progress_message()
    assert message.startswith("Job 42 is queued in partition cpu, waiting for ReqNodeNotAvail"), message
    assert "It cannot start: node vm is drained (Kill task failed); the spawn gives up after 30 s" in message
    spawner.poller._failing_since, spawner.poller.last_error = 0.0, "squeue gave no answer within 20 s"
    message = spawner.progress_message()
    assert message.startswith("Slurm is not answering since 00:00:00 UTC (squeue gave no answer within 20 s)")
    assert message.endswith("unless a node comes back"), message


UNREACHABLE = "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)"


@pytest.mark.parametrize("error, submitted", [
    (CommandError(["sbatch"], 1, "", UNREACHABLE), True),
    (CommandError(["sbatch"], 1, "", "sbatch: error: invalid partition specified: x"), False),
    (CommandError(["sbatch"], None, "", "", timed_out=True), False),  # it may have reached Slurm: never twice
], ids=["controller-unreachable", "refused", "timed-out"])
async def test_sbatch_is_repeated_only_while_it_never_reached_the_controller(monkeypatch, error, submitted):
    monkeypatch.setattr(slurm_module, "SUBMIT_RETRY_FIRST_DELAY", 0.01)
    calls, messages = [], []
    spawner = make_spawner()

    async def flaky(argv, *, input=None, env=None, timeout=30, check=True):
        calls.append(argv)
        if any(a.endswith("sbatch") for a in argv) and len(calls) <= 2:
            messages.append(spawner.progress_message())
            raise error
        return CommandResult(list(argv), 0, "42\n", "")

    monkeypatch.setattr(slurm_module, "run_command", flaky)
    if submitted:
        assert await spawner.submit_batch_script() == "42"
        assert len(calls) == 3
        assert "The Slurm controller is not answering" in messages[-1] and "submitting your job again" in messages[-1]
        assert spawner.progress_message() != messages[-1]  # the message goes with the trouble
    else:
        with pytest.raises(SpawnException, match="Slurm refused the job"):
            await spawner.submit_batch_script()
        assert len(calls) == 1


async def test_port_released_when_start_is_cancelled(commands):
    spawner = make_spawner()
    spawner.poller.jobs["42"] = JobInfo("42", "PENDING", "Resources")
    task = asyncio.ensure_future(spawner.start())
    while not spawner.job_id and not task.done():
        await asyncio.sleep(0)
    assert not task.done(), task.exception()
    assert _PORTS_IN_USE == {spawner.port}
    task.cancel()  # what start_timeout does
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not _PORTS_IN_USE


async def test_port_released_when_poll_finds_the_job_gone():
    spawner = make_spawner()
    spawner.job_id, spawner.port = "42", 20001
    _PORTS_IN_USE.add(20001)
    spawner.poller.jobs["42"] = JobInfo("42", "RUNNING", host="vm")
    assert await spawner.poll() is None and _PORTS_IN_USE == {20001}
    spawner.poller.jobs["42"] = JobInfo("42", "TIMEOUT")
    assert await spawner.poll() == 1
    assert not _PORTS_IN_USE


async def test_port_released_at_stop(commands):
    spawner = make_spawner()
    spawner.job_id, spawner.port = "42", 20002
    _PORTS_IN_USE.add(20002)
    await spawner.stop()
    assert not _PORTS_IN_USE


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(CommandError(["scancel"], 1, "", "Invalid job id specified"), id="scancel-fails"),
        pytest.param(RuntimeError("unexpected"), id="unexpected-error"),
    ],
)
async def test_port_released_when_cancel_fails(monkeypatch, error):
    async def fail(argv, **kwargs):
        raise error

    monkeypatch.setattr(slurm_module, "run_command", fail)
    spawner = make_spawner()
    spawner.job_id, spawner.port = "42", 20003
    _PORTS_IN_USE.add(20003)
    try:
        await spawner.stop()
    except RuntimeError:
        pass
    assert not _PORTS_IN_USE


# -- 5./7. settings in one place, declared state --------------------------------------------------


def test_poller_settings_live_on_the_poller_only():
    for gone in ("queue_poll_interval", "queue_fast_interval", "squeue_timeout", "squeue_path"):
        assert not SlurmSpawner.class_traits().get(gone), gone
    c = config()
    c.SlurmQueuePoller.interval = 7.0
    c.SlurmQueuePoller.fast_interval = 0.25
    c.SlurmQueuePoller.squeue = "/opt/slurm/bin/squeue"
    spawner = SlurmSpawner(config=c, user=User("demo"), job_name="test-poller-config")
    assert (spawner.poller.interval, spawner.poller.fast_interval, spawner.poller.squeue) == (
        7.0, 0.25, "/opt/slurm/bin/squeue",
    )


def test_spawner_state_is_declared():
    spawner = make_spawner()
    assert spawner._job_info is None and spawner._job_output == ""
    assert spawner.auth_identity == "" and spawner.auth_unix_account == "" and spawner.job_account == ""
    for cls in (SlurmSpawner, PolicySpawnerMixin):
        source = inspect.getsource(inspect.getmodule(cls))
        assert "getattr(self," not in source, cls


async def test_batchspawners_template_settings_are_off(commands):
    """Setting batchspawner's shell-template traits changes nothing of what runs (STYLE rule 15)."""
    plain = make_spawner()
    plain.resource_request = plain.validated_request({})
    plain.job_account = "demo"
    await plain.submit_batch_script()
    hostile = make_spawner(
        batch_script="#!/bin/sh\nid > /tmp/pwned\n",
        batch_submit_cmd="/bin/sh -c 'id > /tmp/pwned'",
        batch_cancel_cmd="/bin/sh -c 'id > /tmp/pwned'",
        exec_prefix="/bin/sh -c 'id > /tmp/pwned'",
        req_options="--uid=0",
        req_prologue="id > /tmp/pwned",
        batchspawner_singleuser_cmd="/bin/sh",
    )
    hostile.resource_request = hostile.validated_request({})
    hostile.job_account = "demo"
    await hostile.submit_batch_script()
    hostile.job_id = "42"
    await hostile.stop()
    (argv, _, script), (argv2, _, script2) = commands[0], commands[1]
    assert (argv, script) == (argv2, script2)
    assert not any("pwned" in " ".join(c[0]) or "pwned" in (c[2] or "") for c in commands)
    assert commands[2][0] == ["/usr/bin/sudo", "-n", "-u", "demo", "/usr/bin/scancel", "42"]
