"""Jupyter servers as Slurm jobs: batchspawner's ``SlurmSpawner``, policy-driven and polled once.

What this adds to batchspawner's ``SlurmSpawner`` (entry point ``science-gateway-slurm``):

- **The policy, the job identity and the unix account** of :class:`~.base.PolicySpawnerMixin`: every
  ``user_options`` is validated against the group policy (in ``apply_user_options`` and again in
  ``start``), and the job runs as the user's unix account (``auth_state["unix_account"]``, else the
  hub username), never as a system account.
- **No shell.** The job script and ``sbatch`` argv are built by the pure functions of
  :mod:`.slurm_script`; commands run through :func:`science_gateway.core.commands.run_command`
  (``create_subprocess_exec``, timeouts). Jobs carry a fixed job name (:attr:`job_name`) and a
  ``--comment`` with the user's identity and the gateway's name.
- **A minimal, explicit environment.** ``sbatch`` and ``scancel`` get only the job's environment
  (``get_env()``) or nothing, never the hub's own; ``sudo`` runs without ``-E`` and passes just the
  job's variable *names* (``--preserve-env=NAMES``, then ``sbatch --export=NAMES``), so values such
  as ``JUPYTERHUB_API_TOKEN`` are never in any argv (``ps`` shows argv to everyone) nor in the logs.
- **One squeue for all users** (:mod:`.poller`): ``poll()``, ``start()`` and ``progress()`` read a
  shared snapshot; a failing ``squeue`` keeps the last snapshot, so no live server is dropped.
  Its settings live on :class:`~.poller.SlurmQueuePoller` only.
- **Queue-aware progress**: the pending reason and estimated start from ``squeue``; a job that
  ends before the server answers fails the spawn with Slurm's state and reason. While ``squeue``
  fails or hangs (e.g. the controller restarts) the spawn page says so and the spawn keeps waiting.
  A job whose partition has no node that takes jobs (drained, down) fails the spawn after
  :attr:`SlurmSpawner.nodes_unavailable_timeout` with the node's state and reason, instead of
  waiting out ``start_timeout``; the job is cancelled.
- The hub picks each server's port (unique among this hub's servers) and passes it in
  ``JUPYTERHUB_SERVICE_URL``, so two servers starting on one node cannot race for a port; the port
  is released on every path that ends a job.

Override ladder (subclasses, in increasing depth): the traits; :meth:`job_identity`,
:meth:`job_command`; :meth:`submit_batch_script`. Do not override ``start`` (the policy template of
:class:`~.base.PolicySpawnerMixin`), :meth:`start_job`, ``poll`` or ``stop``: they hold the snapshot
and port bookkeeping together.

What of batchspawner this class turns off (each is tested to be off):

- **The ``/hub/api/batchspawner`` route.** Importing batchspawner appends a handler to
  ``jupyterhub.apihandlers.default_handlers`` whose POST sets *any* attribute named in the JSON body
  on the caller's spawner, for anyone holding the server's API token (every kernel has it). Spawner
  objects outlive a spawn, so a user could set e.g. ``user_command_prefix`` and have the hub run a
  program of their choosing at the next stop. Creating the first :class:`SlurmSpawner` removes
  that handler from the list (the hub then answers 404, like any unknown API path) and makes the
  handler class itself answer 404, since the hub has usually built its routes by then. Nothing
  here needs the route: the hub picks the port, so ``batchspawner-singleuser`` is not used. Only
  a hub that uses this spawner loses the route: importing this module changes nothing (JupyterHub
  imports every installed spawner's entry point at start-up, so an import-time switch would break
  stock batchspawner spawners in any hub with this package installed). No server token can reach
  the route before the switch: a token belongs to a spawner, and the spawner is created first.
- Its shell-template path: ``batch_script``, ``batch_submit_cmd``, ``batch_query_cmd``,
  ``batch_cancel_cmd``, ``exec_prefix``, the ``req_*`` traits, ``batchspawner_singleuser_cmd``,
  ``startup_poll_interval`` and the ``state_*_re`` regexes are not used: the job is built from the
  policy and the traits below, and its state comes from the shared poller.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import random
import sys
import time

import batchspawner
import batchspawner.api
import jupyterhub.apihandlers
import jupyterhub.handlers
from jupyterhub.spawner import SpawnException
from tornado import web
from traitlets import Float, Instance, Integer, List, Unicode, default

from ..core.batch import NotebookJobs, batch_environment
from ..core.commands import CommandError, run_command
from ..core.policy import ResourceRequest
from ..core.presets import DaskPresets, dask_environment, worker_job_name
from .base import PolicySpawnerMixin
from .poller import UNKNOWN, SlurmQueuePoller, shared_poller
from .slurm_script import (
    JobInfo,
    build_cancel_workers_argv,
    build_comment,
    build_job_script,
    build_sbatch_argv,
    build_scancel_argv,
    controller_unreachable,
    expand_prefix,
    parse_sbatch_output,
)

#: ports handed to servers of this hub process that may still be in use
_PORTS_IN_USE: set[int] = set()

#: seconds before the first new submission when sbatch could not reach the controller (then doubled)
SUBMIT_RETRY_FIRST_DELAY = 1.0

#: the path batchspawner registers (relative to the hub's prefix)
BATCHSPAWNER_API_PATH = r"/api/batchspawner"


def close_batchspawner_api() -> None:
    """Take batchspawner's ``/hub/api/batchspawner`` route out of JupyterHub (idempotent).

    The handler is removed from JupyterHub's handler lists, and its verbs answer 404 in case a
    copy of the list was taken before this ran (the hub's own, when it built its routes first).
    """
    handler = batchspawner.api.BatchSpawnerAPIHandler
    for handlers in (jupyterhub.apihandlers.default_handlers, jupyterhub.handlers.default_handlers):
        handlers[:] = [h for h in handlers if not (h[1] is handler or h[0] == BATCHSPAWNER_API_PATH)]

    def not_found(self, *args, **kwargs):
        raise web.HTTPError(404)

    for verb in ("get", "post", "put", "patch", "delete"):
        setattr(handler, verb, not_found)


class SlurmSpawner(PolicySpawnerMixin, batchspawner.SlurmSpawner):
    """Start each user's Jupyter server as a Slurm job, within the group resource policy."""

    metrics_backend = "slurm"

    def __init__(self, **kwargs):
        # the hub uses this spawner: batchspawner's route goes (not at import, see the module doc)
        close_batchspawner_api()
        super().__init__(**kwargs)

    python_prefix = Unicode(
        help="""
        Prefix (venv or conda env) whose ``bin/jupyterhub-singleuser`` the job runs; it must be
        readable by every user on the compute nodes. Default: the hub's own ``sys.prefix``, right
        when hub and servers share one world-readable environment.
        """,
    ).tag(config=True)

    @default("python_prefix")
    def _python_prefix_default(self):
        return sys.prefix

    sbatch_path = Unicode("/usr/bin/sbatch", help="Absolute path of sbatch (sudo's secure_path replaces PATH).").tag(
        config=True
    )
    scancel_path = Unicode("/usr/bin/scancel", help="Absolute path of scancel.").tag(config=True)
    user_command_prefix = List(
        Unicode(),
        ["/usr/bin/sudo", "-n", "-u", "{username}", "--preserve-env={env_names}"],
        help="""
        argv prefix that runs sbatch and scancel as the job's unix account. An element equal to
        ``{username}`` becomes the account's name; an element containing ``{env_names}`` gets the
        comma-separated names of the variables the command must receive (the job's environment,
        for sbatch) and is left out when there are none (scancel). Values never appear in argv:
        the command's environment holds them, and only them (never the hub's own environment).
        A hub that is not root needs a sudoers rule with SETENV for sbatch and scancel. Empty when
        the hub already runs as the user.
        """,
    ).tag(config=True)
    command_env_keep = List(
        Unicode(),
        ["SLURM_CONF"],
        help="""
        Names of the hub's environment variables that sbatch and scancel need for themselves
        (e.g. SLURM_CONF) and receive besides the job's environment. Nothing else of the hub's
        environment reaches them.
        """,
    ).tag(config=True)
    job_name = Unicode(
        "science-gateway-jupyter",
        help="Job name of every server job: lets site admins spot gateway jobs and lets one squeue find them all.",
    ).tag(config=True)
    gateway_name = Unicode(
        "science-gateway", help="Name of this gateway, written into each job's --comment beside the user's identity."
    ).tag(config=True)
    job_output = Unicode(
        "{homedir}/.science-gateway-slurm-%j.log",
        help="The job's --output; ``{homedir}`` and ``{username}`` are the unix account's, ``%j`` Slurm's job id.",
    ).tag(config=True)
    job_prologue = Unicode(
        "",
        help="Shell lines (written by the admin, never by users) run in the job before the server, e.g. `module load`.",
    ).tag(config=True)
    extra_sbatch_args = List(
        Unicode(), help="Extra sbatch arguments added by the admin for every job (e.g. --qos=interactive)."
    ).tag(config=True)
    command_timeout = Float(60, help="Seconds before sbatch or scancel is killed and the call fails.").tag(config=True)
    port_probe_interval = Float(
        0.1, help="Seconds between connection attempts to a starting server once its job runs."
    ).tag(config=True)
    port_min = Integer(
        20000,
        help="""
        Lowest port the hub hands to a server. Ports are unique among this hub's servers; keep the
        range out of the nodes' ephemeral range (Linux: 32768-60999, ip_local_port_range), where
        outgoing connections and other programs' random ports would collide with servers.
        """,
    ).tag(config=True)
    port_max = Integer(32767, help="Highest port the hub hands to a server (see port_min).").tag(config=True)
    submit_retry_timeout = Float(
        60,
        help="""
        Seconds a spawn keeps submitting its job again while sbatch cannot reach the Slurm
        controller (e.g. while it restarts); the spawn page says so meanwhile. Only a submission
        that never reached the controller is repeated, so no job is submitted twice. 0: fail at
        once.
        """,
    ).tag(config=True)
    nodes_unavailable_timeout = Float(
        30,
        help="""
        Seconds a spawn waits while no node of its partition takes jobs (every node drained, down,
        ...: Slurm's pending reason ``ReqNodeNotAvail``) before it fails with the nodes' state and
        reason and its job is cancelled. A node that comes back within this time lets the spawn go
        on. Without it such a spawn waits out the whole ``start_timeout``.
        """,
    ).tag(config=True)

    poller = Instance(
        SlurmQueuePoller,
        help="The hub's shared queue poller (configured as SlurmQueuePoller: squeue, interval, ...).",
    )

    @default("poller")
    def _poller_default(self):
        return shared_poller(job_name=self.job_name, parent=self)

    # the state of the current job (not configuration)
    _job_info = Instance(JobInfo, allow_none=True, help="The job as the last snapshot saw it.")
    _job_output = Unicode("", help="Path of the current job's output file.")
    _submit_trouble = Unicode("", help="Why the current submission is being repeated ('' when it is not).")

    # -- defaults of JupyterHub/batchspawner traits -------------------------------------------

    @default("cmd")
    def _cmd_default(self):
        return [os.path.join(self.python_prefix, "bin", "jupyterhub-singleuser")]

    @default("start_timeout")
    def _start_timeout_default(self):
        return 600

    # -- command, environment ---------------------------------------------------------------

    def job_command(self) -> list[str]:
        """What the job runs: the server command, with a fixed port (no port retries)."""
        return [*self.cmd, *self.get_args(), "--ServerApp.port_retries=0"]

    def user_env(self, env):
        """USER, HOME, SHELL of the job's unix account (batchspawner's use the hub username)."""
        account = self.unix_account()
        env.update(USER=account.pw_name, HOME=account.pw_dir)
        if account.pw_shell:
            env["SHELL"] = account.pw_shell
        return env

    def get_env(self):
        env = super().get_env()
        env["PATH"] = os.pathsep.join([os.path.join(self.python_prefix, "bin"), "/usr/local/bin", "/usr/bin", "/bin"])
        request = self.resource_request
        env.update(
            dask_environment(
                DaskPresets(parent=self),
                backend="slurm",
                groups=self.user_groups(),
                choices=self.policy.choices(self.user_groups()),
                account=request.account if request else "",
                comment=build_comment(self.job_identity(), self.gateway_name),
            )
        )
        # notebooks as batch jobs (science_gateway.jobs): the user's pipelines and the policy of their groups
        env.update(batch_environment(NotebookJobs(parent=self), groups=self.user_groups(), policy=self.policy))
        return env

    def command_env(self, job_env: dict | None = None) -> dict:
        """The whole environment of sbatch/scancel: ``command_env_keep`` of the hub's, the job's."""
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        env.update({k: os.environ[k] for k in self.command_env_keep if k in os.environ})
        env.update(job_env or {})
        return env

    def user_prefix(self, account: str, env_names=()) -> list[str]:
        return expand_prefix(list(self.user_command_prefix), account, list(env_names))

    # -- ports -----------------------------------------------------------------------------

    def _pick_port(self) -> int:
        free = self.port_max - self.port_min + 1 - len(_PORTS_IN_USE)
        if free <= 0:
            raise SpawnException("no free server port on the hub", reason="ports", status_code=503)
        while True:
            port = random.randint(self.port_min, self.port_max)
            if port not in _PORTS_IN_USE:
                _PORTS_IN_USE.add(port)
                return port

    def _release_port(self):
        """Give the job's port back (every path that ends a job comes here)."""
        for port in (self.port, self.server.port if self.server else 0):
            if port:
                _PORTS_IN_USE.discard(port)

    # -- batchspawner's extension points ----------------------------------------------------

    async def run_command(self, cmd, input=None, env=None):
        """Run ``cmd`` (an argv list; never a shell string) with exactly ``env``; return stdout."""
        result = await run_command(cmd, input=input, env=self.command_env(env), timeout=self.command_timeout)
        return result.stdout.strip()

    async def submit_batch_script(self):
        request = self.resource_request or self.validated_request(dict(self.user_options or {}))
        account = self.unix_account()
        output = self.job_output.replace("{homedir}", account.pw_dir).replace("{username}", account.pw_name)
        env = self.get_env()
        argv = build_sbatch_argv(
            request,
            sbatch=self.sbatch_path,
            prefix=self.user_prefix(account.pw_name, env),
            job_name=self.job_name,
            comment=build_comment(self.job_identity(), self.gateway_name),
            output=output,
            workdir=account.pw_dir,
            export=list(env),
            extra=list(self.extra_sbatch_args),
        )
        script = build_job_script(self.job_command(), self.job_prologue)
        self.log.info("Submitting Slurm job for %s as %s: %s", self._log_name, account.pw_name, " ".join(argv))
        try:
            out = await self._submit_until_the_controller_answers(argv, script, env)
            self.job_id = parse_sbatch_output(out)
        except (CommandError, ValueError) as e:
            self.job_id = ""
            message = getattr(e, "stderr", "") or str(e)
            raise SpawnException(
                f"Slurm refused the job: {message.strip()[-300:]}", reason="sbatch", status_code=500
            ) from None
        self._job_output = output.replace("%j", self.job_id)
        self.log.info("Slurm job %s submitted for %s", self.job_id, self._log_name)
        return self.job_id

    async def _submit_until_the_controller_answers(self, argv, script, env) -> str:
        """sbatch; again, with growing pauses, while it never reached the controller."""
        deadline = time.monotonic() + self.submit_retry_timeout
        delay = SUBMIT_RETRY_FIRST_DELAY
        try:
            while True:
                try:
                    return await self.run_command(argv, input=script, env=env)
                except CommandError as e:
                    if e.timed_out or not controller_unreachable(e.stderr) or time.monotonic() + delay > deadline:
                        raise
                    self._submit_trouble = (
                        "The Slurm controller is not answering (sbatch: Unable to contact slurm controller); "
                        f"submitting your job again in {delay:g} s"
                    )
                    self.log.warning("sbatch for %s could not reach the controller; again in %g s", self._log_name, delay)
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, 10.0)
        finally:
            self._submit_trouble = ""

    async def query_job_status(self):
        """batchspawner's status query, answered from the shared snapshot."""
        if not self.job_id:
            return batchspawner.JobStatus.NOTFOUND
        info = await self.poller.lookup(self.job_id)
        if info is UNKNOWN:
            return batchspawner.JobStatus.UNKNOWN
        self._job_info = info
        if info is None or info.finished:
            return batchspawner.JobStatus.NOTFOUND
        return batchspawner.JobStatus.RUNNING if info.running else batchspawner.JobStatus.PENDING

    def state_ispending(self):
        return self._job_info is not None and self._job_info.pending

    def state_isrunning(self):
        return self._job_info is not None and self._job_info.running

    def state_gethost(self):
        return self._job_info.host if self._job_info is not None else ""

    async def cancel_batch_job(self):
        account = self.unix_account()
        argv = build_scancel_argv(self.scancel_path, self.user_prefix(account.pw_name), self.job_id)
        await self.run_command(argv)

    async def cancel_dask_workers(self, job_id):
        """Cancel the Dask worker jobs the session ``job_id`` started (named after it)."""
        name = worker_job_name(DaskPresets(parent=self).job_name, job_id)
        try:
            account = self.unix_account()
            argv = build_cancel_workers_argv(
                self.scancel_path, self.user_prefix(account.pw_name), name, account.pw_name
            )
            await self.run_command(argv)
        except (CommandError, ValueError, SpawnException) as e:
            self.log.warning("cancelling Dask workers %s of %s: %s", name, self._log_name, e)

    # -- the spawner lifecycle -------------------------------------------------------------

    async def start_job(self, request: ResourceRequest, account: pwd.struct_passwd):
        """Submit, wait until the job runs and its server accepts connections."""
        self._job_info = None
        self.port = self._pick_port()  # JupyterHub records it from start()'s return value
        try:
            return await self._submit_and_wait()
        except BaseException:
            self._release_port()
            raise

    async def _submit_and_wait(self):
        await self.submit_batch_script()
        job_id = self.job_id
        # any snapshot begun before sbatch returned may miss the job: it counts as unknown, not gone
        self.poller.watch(job_id, submitted_at=time.time(), starting=True)
        submitted = time.monotonic()
        blocked_since = None
        try:
            while True:
                status = await self.query_job_status()
                if status == batchspawner.JobStatus.RUNNING:
                    self.observe_queue_wait(time.monotonic() - submitted)
                    break
                if status == batchspawner.JobStatus.NOTFOUND:
                    raise self._job_ended_error(job_id)
                why = self.poller.nodes_unavailable(self._job_info) if status == batchspawner.JobStatus.PENDING else ""
                if not why:
                    blocked_since = None
                elif blocked_since is None:
                    blocked_since = time.monotonic()
                    self.log.warning("Slurm job %s of %s cannot start: %s", job_id, self._log_name, why)
                elif time.monotonic() - blocked_since >= self.nodes_unavailable_timeout:
                    raise self._nodes_unavailable_error(job_id, why)
                await self.poller.next_snapshot(timeout=max(5.0, 3 * self.poller.fast_interval))
            host = self.state_gethost()
            await self._wait_for_port(job_id, host, self.port)
        finally:
            self.poller.started(job_id)
        self.log.info("Slurm job %s of %s runs on %s:%s", job_id, self._log_name, host, self.port)
        return host, self.port

    async def _wait_for_port(self, job_id, host, port):
        """Return once the server accepts connections (the hub's first HTTP check then succeeds,
        instead of backing off for seconds); fail if the job ends first."""
        last_check = time.monotonic()
        while True:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
            except (OSError, asyncio.TimeoutError):
                pass
            else:
                writer.close()
                return
            if time.monotonic() - last_check > self.poller.fast_interval:
                last_check = time.monotonic()
                if await self.query_job_status() == batchspawner.JobStatus.NOTFOUND:
                    raise self._job_ended_error(job_id)
            await asyncio.sleep(self.port_probe_interval)

    def _job_ended_error(self, job_id) -> SpawnException:
        info = self._job_info
        what = info.describe() if info is not None else f"Job {job_id} left the queue"
        log = self._job_output
        self.poller.unwatch(job_id)
        self._release_port()
        self.clear_state()
        return SpawnException(
            f"Your server's Slurm job ended before Jupyter started. {what}."
            + (f" The job's output is in {log}." if log else ""),
            reason="job_ended",
            status_code=500,
        )

    def _nodes_unavailable_error(self, job_id, why) -> SpawnException:
        """The spawn gives up: no node of the partition takes jobs. The job is still queued; the
        hub's clean-up after a failed start (``stop``) cancels it."""
        partition = self._job_info.partition if self._job_info else "?"
        return SpawnException(
            f"Your server cannot start: no node of partition {partition} takes jobs now ({why}). "
            f"Job {job_id} was cancelled. Try another partition, or ask the site admins to bring the node back.",
            reason="nodes_unavailable",
            status_code=503,
        )

    def progress_message(self) -> str:
        """What the spawn page shows now: the queue's word on the job, and any trouble."""
        info = self._job_info
        if info is not None:
            message = info.describe()
            why = self.poller.nodes_unavailable(info)
            if why:
                message += (
                    f". It cannot start: {why}; the spawn gives up after "
                    f"{self.nodes_unavailable_timeout:g} s unless a node comes back"
                )
        elif self.job_id:
            message = f"Job {self.job_id} submitted to Slurm; waiting for the queue to answer"
        else:
            message = self._submit_trouble or "Submitting the job to Slurm"
        trouble = self.poller.trouble() if self.job_id else ""
        return f"{trouble}. {message}" if trouble else message

    async def poll(self):
        if not self.job_id:
            return 0
        if not self.poller.watching(self.job_id):
            self.poller.watch(self.job_id)  # e.g. a job re-adopted after a hub restart
        status = await self.query_job_status()
        if status in (batchspawner.JobStatus.PENDING, batchspawner.JobStatus.RUNNING, batchspawner.JobStatus.UNKNOWN):
            if self.server and self.server.port:
                _PORTS_IN_USE.add(self.server.port)
            return None
        self.log.info("Slurm job %s of %s is gone: %s", self.job_id, self._log_name, self._job_info)
        self.poller.unwatch(self.job_id)
        self._release_port()
        self.clear_state()
        return 1

    async def stop(self, now=False):
        job_id = self.job_id
        try:
            if not job_id:
                return
            self.log.info("Cancelling Slurm job %s of %s", job_id, self._log_name)
            try:
                await self.cancel_batch_job()
            except (CommandError, ValueError, SpawnException) as e:
                # A job that already ended (e.g. while the hub was down) cannot be cancelled: that is fine.
                self.log.warning("scancel %s: %s", job_id, e)
            await self.cancel_dask_workers(job_id)
            self.poller.unwatch(job_id)
        finally:
            self._release_port()

    async def progress(self):
        last = None
        while True:
            info = self._job_info
            message = self.progress_message()
            if message != last:
                yield {"message": message}
                last = message
            if info is not None and info.running:
                return
            await asyncio.sleep(1)

    def get_state(self):
        state = super().get_state()
        if self.job_id and self.port:
            state["port"] = self.port
        return state

    def load_state(self, state):
        super().load_state(state)
        self.port = state.get("port", 0)

    async def get_url(self):
        """After a hub restart: the URL from the job's node (squeue) and the port in our state."""
        host = self.state_gethost()
        if self.server and host and self.port:
            return f"{self.server.proto}://{host}:{self.port}{self.server.base_url}"
        return await super().get_url()

    def clear_state(self):
        super().clear_state()
        self._job_info = None
        self._job_output = ""
