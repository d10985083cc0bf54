"""Jupyter servers as Slurm jobs: batchspawner's ``SlurmSpawner``, policy-driven and polled once.

What this adds to batchspawner's ``SlurmSpawner`` (entry point ``science-gateway-slurm``):

- **A resource form and server-side validation from the group policy**
  (:class:`~science_gateway.core.policy.ResourcePolicy`): ``options_form`` shows only what the user's
  groups allow, ``options_from_form``/``options_from_query`` parse form posts and spawn URLs, and
  ``apply_user_options`` validates every ``user_options`` (form, URL or REST API) before anything
  runs; ``start`` validates again before ``sbatch``. Policy errors are HTTP 400/403 with a message
  that says what is allowed.
- **No shell.** The job script and ``sbatch`` argv are built by the pure functions of
  :mod:`.slurm_script`; commands run through :func:`science_gateway.core.commands.run_command`
  (``create_subprocess_exec``, timeouts). Jobs carry a fixed job name (:attr:`job_name`) and a
  ``--comment`` with the user's identity and the gateway's name.
- **One squeue for all users** (:mod:`.poller`): ``poll()``, ``start()`` and ``progress()`` read a
  shared snapshot; a failing ``squeue`` keeps the last snapshot, so no live server is dropped.
- **Queue-aware progress**: the pending reason and estimated start from ``squeue``; a job that
  ends before the server answers fails the spawn with Slurm's state and reason.
- The hub picks each server's port (unique among this hub's servers) and passes it in
  ``JUPYTERHUB_SERVICE_URL``, so two servers starting on one node cannot race for a port.

Override ladder (subclasses, in increasing depth): the traits; :meth:`job_identity`,
:meth:`job_command`; :meth:`submit_batch_script`. Do not override ``start``, ``poll`` or ``stop``:
they hold the snapshot and port bookkeeping together.

batchspawner settings that this class does not use: ``batch_script``, ``batch_submit_cmd``,
``batch_query_cmd``, ``batch_cancel_cmd``, ``exec_prefix``, ``req_*``, ``batchspawner_singleuser_cmd``
(their jobs are built from the policy and the traits below instead).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import random
import re
import sys
import time

import batchspawner
from jupyterhub.spawner import SpawnException
from traitlets import Float, Instance, Integer, List, Unicode, default

from ..core.commands import CommandError, run_command
from ..core.policy import PolicyError, ResourcePolicy, ResourceRequest
from ..core.presets import DaskPresets, dask_environment, worker_job_name
from .form import options_from_form_data, render_form
from .poller import UNKNOWN, SlurmQueuePoller, shared_poller
from .slurm_script import (
    JobInfo,
    build_cancel_workers_argv,
    build_comment,
    build_job_script,
    build_sbatch_argv,
    build_scancel_argv,
    expand_prefix,
    parse_sbatch_output,
)

#: unix names we hand to sudo -u (no '#uid', no options, nothing odd)
UNIX_NAME_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")

#: ports handed to servers of this hub process that may still be in use
_PORTS_IN_USE: set[int] = set()


class SlurmSpawner(batchspawner.SlurmSpawner):
    """Start each user's Jupyter server as a Slurm job, within the group resource policy."""

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
    squeue_path = Unicode(
        "/usr/bin/squeue", help="Absolute path of squeue, run by the hub's shared poller (no sudo)."
    ).tag(config=True)
    scancel_path = Unicode("/usr/bin/scancel", help="Absolute path of scancel.").tag(config=True)
    user_command_prefix = List(
        Unicode(),
        ["/usr/bin/sudo", "-E", "-u", "{username}"],
        help="""
        argv prefix that runs sbatch and scancel as the user; an element equal to ``{username}``
        becomes the unix name. Empty when the hub already runs as the user (or submits as root
        with site-specific means).
        """,
    ).tag(config=True)
    job_name = Unicode(
        "science-gateway-jupyter",
        help="Job name of every server job: lets site admins spot gateway jobs and lets one squeue find them all.",
    ).tag(config=True)
    gateway_name = Unicode(
        "science-gateway", help="Name of this gateway, written into each job's --comment beside the user's identity."
    ).tag(config=True)
    identity_keys = List(
        Unicode(),
        ["voperson_id", "eduperson_principal_name", "sub"],
        help="""
        auth_state keys (looked up at the top level and under ``oauth_user``) whose first value is
        the user's federated identity for the job's --comment. Falls back to the hub username.
        """,
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
    queue_poll_interval = Float(
        30, help="Seconds between the shared squeue calls while no server is starting."
    ).tag(config=True)
    queue_fast_interval = Float(
        1, help="Seconds between the shared squeue calls while any server is starting."
    ).tag(config=True)
    squeue_timeout = Float(20, help="Seconds before a squeue call is killed (the last snapshot is kept).").tag(
        config=True
    )
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

    policy = Instance(ResourcePolicy, help="The group resource policy (configured as ResourcePolicy).")

    @default("policy")
    def _policy_default(self):
        return ResourcePolicy(parent=self)

    poller = Instance(SlurmQueuePoller, help="The hub's shared queue poller.")

    @default("poller")
    def _poller_default(self):
        return shared_poller(
            squeue=self.squeue_path,
            job_name=self.job_name,
            parent=self,
            interval=self.queue_poll_interval,
            fast_interval=self.queue_fast_interval,
            timeout=self.squeue_timeout,
        )

    resource_request = Instance(
        ResourceRequest, allow_none=True, help="The validated request of the current spawn."
    )

    # -- defaults of JupyterHub/batchspawner traits -------------------------------------------

    @default("cmd")
    def _cmd_default(self):
        return [os.path.join(self.python_prefix, "bin", "jupyterhub-singleuser")]

    @default("options_form")
    def _options_form_default(self):
        return _policy_options_form

    @default("options_from_form")
    def _options_from_form_default(self):
        return options_from_form_data

    @default("apply_user_options")
    def _apply_user_options_default(self):
        return _apply_policy

    @default("start_timeout")
    def _start_timeout_default(self):
        return 600

    # -- policy ---------------------------------------------------------------------------

    def user_groups(self) -> list[str]:
        return sorted(g.name for g in self.user.groups)

    def validated_request(self, options) -> ResourceRequest:
        """``options`` checked against the policy for this user's groups, or a 4xx SpawnException."""
        groups = self.user_groups()
        try:
            return self.policy.validate(groups, options)
        except PolicyError as e:
            status = 403 if not self.policy.choices(groups).partitions else 400
            raise SpawnException(str(e), reason="resource_policy", status_code=status) from None

    def options_from_query(self, query_data):
        return options_from_form_data(query_data)

    def render_options_form(self) -> str:
        groups = self.user_groups()
        choices = self.policy.choices(groups)
        if not choices.partitions:
            return (
                "<p>None of your groups may start a server on this gateway's cluster. "
                "Ask the gateway admins to add your group to the resource policy.</p>"
            )
        try:
            current = self.policy.validate(groups, dict(self.user_options or {}))
        except PolicyError:
            current = self.policy.default_request(groups)
        return render_form(choices, current)

    # -- identity, account, command -------------------------------------------------------

    async def run_auth_state_hook(self, auth_state):
        self._auth_state_identity = self._identity_from(auth_state or {})
        await super().run_auth_state_hook(auth_state)

    def _identity_from(self, auth_state: dict) -> str:
        for source in (auth_state, auth_state.get("oauth_user") or {}):
            for key in self.identity_keys:
                value = source.get(key) if isinstance(source, dict) else None
                if isinstance(value, str) and value:
                    return value
        return ""

    def job_identity(self) -> str:
        """Who the job is for, as written to --comment: the federated identity, else the username."""
        return getattr(self, "_auth_state_identity", "") or self.user.name

    def unix_account(self) -> pwd.struct_passwd:
        name = self.user.name
        if not UNIX_NAME_RE.match(name):
            raise SpawnException(
                f"the username {name!r} cannot be a unix account on the cluster", reason="unix_account", status_code=403
            )
        try:
            return pwd.getpwnam(name)
        except KeyError:
            raise SpawnException(
                f"there is no unix account {name!r} on the cluster; ask the site admins to create it",
                reason="unix_account",
                status_code=403,
            ) from None

    def job_command(self) -> list[str]:
        """What the job runs: the server command, with a fixed port (no port retries)."""
        return [*self.cmd, *self.get_args(), "--ServerApp.port_retries=0"]

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
        return env

    def _pick_port(self) -> int:
        free = self.port_max - self.port_min + 1 - len(_PORTS_IN_USE)
        if free <= 0:
            raise SpawnException("no free server port on the hub", reason="ports", status_code=503)
        while True:
            port = random.randint(self.port_min, self.port_max)
            if port not in _PORTS_IN_USE:
                _PORTS_IN_USE.add(port)
                return port

    # -- batchspawner's extension points ----------------------------------------------------

    async def run_command(self, cmd, input=None, env=None):
        """Run ``cmd`` (an argv list; never a shell string) and return its stdout."""
        result = await run_command(cmd, input=input, env=env, timeout=self.command_timeout)
        return result.stdout.strip()

    async def submit_batch_script(self):
        request = self.validated_request(dict(self.user_options or {}))
        self.resource_request = request
        account = self.unix_account()
        output = self.job_output.replace("{homedir}", account.pw_dir).replace("{username}", account.pw_name)
        env = self.get_env()
        argv = build_sbatch_argv(
            request,
            sbatch=self.sbatch_path,
            prefix=expand_prefix(list(self.user_command_prefix), account.pw_name),
            job_name=self.job_name,
            comment=build_comment(self.job_identity(), self.gateway_name),
            output=output,
            workdir=account.pw_dir,
            export=list(env),
            extra=list(self.extra_sbatch_args),
        )
        script = build_job_script(self.job_command(), self.job_prologue)
        self.log.info("Submitting Slurm job for %s: %s", self._log_name, " ".join(argv))
        try:
            out = await self.run_command(argv, input=script, env=env)
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
        info = getattr(self, "_job_info", None)
        return isinstance(info, JobInfo) and info.pending

    def state_isrunning(self):
        info = getattr(self, "_job_info", None)
        return isinstance(info, JobInfo) and info.running

    def state_gethost(self):
        info = getattr(self, "_job_info", None)
        return info.host if isinstance(info, JobInfo) else ""

    async def cancel_batch_job(self):
        argv = build_scancel_argv(
            self.scancel_path, expand_prefix(list(self.user_command_prefix), self.user.name), self.job_id
        )
        await self.run_command(argv)

    async def cancel_dask_workers(self, job_id):
        """Cancel the Dask worker jobs the session ``job_id`` started (named after it)."""
        name = worker_job_name(DaskPresets(parent=self).job_name, job_id)
        argv = build_cancel_workers_argv(
            self.scancel_path, expand_prefix(list(self.user_command_prefix), self.user.name), name, self.user.name
        )
        try:
            await self.run_command(argv)
        except (CommandError, ValueError) as e:
            self.log.warning("cancelling Dask workers %s of %s: %s", name, self._log_name, e)

    # -- the spawner lifecycle -------------------------------------------------------------

    async def start(self):
        self._job_info = None
        self.port = self._pick_port()  # JupyterHub records it from start()'s return value
        try:
            await self.submit_batch_script()
        except BaseException:
            _PORTS_IN_USE.discard(self.port)
            raise
        job_id = self.job_id
        # any snapshot begun before sbatch returned may miss the job: it counts as unknown, not gone
        self.poller.watch(job_id, submitted_at=time.time(), starting=True)
        try:
            while True:
                status = await self.query_job_status()
                if status == batchspawner.JobStatus.RUNNING:
                    break
                if status == batchspawner.JobStatus.NOTFOUND:
                    raise self._job_ended_error(job_id)
                await self.poller.next_snapshot(timeout=max(5.0, 3 * self.queue_fast_interval))
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
            if time.monotonic() - last_check > self.queue_fast_interval:
                last_check = time.monotonic()
                if await self.query_job_status() == batchspawner.JobStatus.NOTFOUND:
                    raise self._job_ended_error(job_id)
            await asyncio.sleep(self.port_probe_interval)

    def _job_ended_error(self, job_id) -> SpawnException:
        info = getattr(self, "_job_info", None)
        what = info.describe() if isinstance(info, JobInfo) else f"Job {job_id} left the queue"
        log = getattr(self, "_job_output", "")
        self.poller.unwatch(job_id)
        self.clear_state()
        return SpawnException(
            f"Your server's Slurm job ended before Jupyter started. {what}."
            + (f" The job's output is in {log}." if log else ""),
            reason="job_ended",
            status_code=500,
        )

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
        self.log.info("Slurm job %s of %s is gone: %s", self.job_id, self._log_name, getattr(self, "_job_info", None))
        self.poller.unwatch(self.job_id)
        self.clear_state()
        return 1

    async def stop(self, now=False):
        job_id = self.job_id
        if not job_id:
            return
        self.log.info("Cancelling Slurm job %s of %s", job_id, self._log_name)
        try:
            await self.cancel_batch_job()
        except (CommandError, ValueError) as e:
            # A job that already ended (e.g. while the hub was down) cannot be cancelled: that is fine.
            self.log.warning("scancel %s: %s", job_id, e)
        await self.cancel_dask_workers(job_id)
        self.poller.unwatch(job_id)
        _PORTS_IN_USE.discard(self.port)
        if self.server:
            _PORTS_IN_USE.discard(self.server.port)

    async def progress(self):
        last = None
        while True:
            info = getattr(self, "_job_info", None)
            if isinstance(info, JobInfo):
                message = info.describe()
            elif self.job_id:
                message = f"Job {self.job_id} submitted to Slurm; waiting for the queue to answer"
            else:
                message = "Submitting the job to Slurm"
            if message != last:
                yield {"message": message}
                last = message
            if isinstance(info, JobInfo) and info.running:
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
        self.resource_request = None


def _policy_options_form(spawner):
    return spawner.render_options_form()


def _apply_policy(spawner, user_options):
    spawner.resource_request = spawner.validated_request(dict(user_options or {}))
