"""Jupyter servers as HTCondor jobs: batchspawner's ``CondorSpawner``, policy-driven, one schedd query.

What this adds to batchspawner's ``CondorSpawner`` (entry point ``science-gateway-condor``); the
shape is that of :class:`~.slurm.SlurmSpawner`:

- **The policy, the job identity and the unix account** of :class:`~.base.PolicySpawnerMixin`:
  every ``user_options`` is validated against the group policy (in ``apply_user_options`` and
  again in ``start``), and the job is submitted as the user's unix account (``sudo -u``), so it
  runs as that account, never as a system account.
- **The policy's words in HTCondor's terms** (:mod:`.condor_submit`, pure builders): cores, memory
  and GPUs are ``request_cpus``/``request_memory``/``request_gpus``; a partition is what the admin
  maps it to in :attr:`CondorSpawner.partitions` (a requirements expression and/or an accounting
  group); the walltime is a ``periodic_remove``; the account is ``accounting_group``; the user's
  identity is the job attribute ``GatewayUser`` (with ``GatewayName``, ``GatewayPartition`` and
  ``GatewayJob``, the job name the one query filters on).
- **No shell, no secrets in the job ad.** ``condor_submit`` reads the submit description on stdin;
  every value is checked to be one line, arguments are quoted in HTCondor's new syntax and no submit
  macro expands in them. The job's environment (it holds the server's API token) goes to a file of
  the user's, mode 0600, written through ``sudo -u`` from stdin, which the job's launcher reads and
  deletes: every user of a pool may read every job ad (``condor_q -l``), so the token is never in it.
- **One schedd query for all users** (:class:`CondorQueuePoller`, through the Python bindings, in a
  thread): ``poll()``, ``start()`` and ``progress()`` read a shared snapshot; a failing or hanging
  query keeps the last snapshot, so no live server is dropped.
- **Queue-aware progress**: an idle job shows why it has not matched yet (``LastRejMatchReason``),
  a held job its ``HoldReason``; a job that leaves the queue (``condor_rm``) before the server
  answers fails the spawn with how it ended; a held job fails the spawn after
  :attr:`CondorSpawner.held_timeout` (and is removed).
- The hub picks each server's port, as for Slurm (the two spawners share the port bookkeeping).

Override ladder (subclasses, in increasing depth): the traits; :meth:`job_identity`,
:meth:`job_command`; :meth:`submit_batch_script`. Do not override ``start`` (the policy template),
:meth:`start_job`, ``poll`` or ``stop``.

What of batchspawner this class turns off (as for Slurm): the ``/hub/api/batchspawner`` route
(closed when the first spawner is created, see :func:`~.slurm.close_batchspawner_api`) and the
shell-template path (``batch_script``, ``batch_submit_cmd``, ``batch_query_cmd``,
``batch_cancel_cmd``, ``exec_prefix``, the ``req_*`` traits and the ``state_*_re`` regexes are not
used).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import random
import secrets
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import batchspawner
from jupyterhub.spawner import SpawnException
from traitlets import Dict, Float, HasTraits, Instance, Integer, List, Unicode, default, validate

from ..core.commands import CommandError, run_command
from ..core.policy import ResourceRequest
from ..core.presets import DaskPresets, dask_environment, worker_job_name
from ..core.text import quote_prefix, sanitize_comment
from .base import PolicySpawnerMixin
from .condor_submit import (
    QUERY_ATTRS,
    JobInfo,
    PartitionTarget,
    build_env_file,
    build_rm_argv,
    build_rm_workers_argv,
    build_submit_description,
    build_write_env_argv,
    job_constraint,
    parse_cluster_id,
    parse_job_ads,
)
from .poller import UNKNOWN, QueryFailed, QueuePoller, shared_poller
from .slurm import _PORTS_IN_USE, close_batchspawner_api
from .slurm_script import expand_prefix


class CondorQueuePoller(QueuePoller):
    """One schedd query (Python bindings) for every gateway job of every user, shared by all spawners.

    Settings: ``c.CondorQueuePoller.interval = 30`` and the rest of :class:`~.poller.QueuePoller`'s.
    The bindings read the pool's configuration from the hub's environment (``CONDOR_CONFIG``)."""

    scheduler = "HTCondor"
    query_name = "the schedd query"
    metrics_command = "schedd"

    schedd_name = Unicode(
        "", help="Name of the schedd to query and submit to ('' = the schedd of this machine's pool config)."
    ).tag(config=True)
    collector = Unicode(
        "", help="Address of the pool's collector that locates the schedd ('' = COLLECTOR_HOST of the pool config)."
    ).tag(config=True)
    query_threads = Integer(
        2, help="Threads for the blocking schedd queries (a hung query holds one until it returns)."
    ).tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._executor = ThreadPoolExecutor(max_workers=max(1, self.query_threads), thread_name_prefix="sg-schedd")
        self._location = None  # the schedd's location ad, looked up once (again after a failure)

    def _schedd(self):
        # imported on first use: the bindings read the pool config (CONDOR_CONFIG) when imported
        import htcondor

        if self._location is None:
            collector = htcondor.Collector(self.collector) if self.collector else htcondor.Collector()
            if self.schedd_name:
                self._location = collector.locate(htcondor.DaemonTypes.Schedd, self.schedd_name)
            else:
                self._location = collector.locate(htcondor.DaemonTypes.Schedd)
        return htcondor.Schedd(self._location)

    def _query_blocking(self) -> dict[str, JobInfo]:
        ads = self._schedd().query(constraint=job_constraint(self.job_name), projection=list(QUERY_ATTRS))
        return parse_job_ads(ads)

    async def query(self) -> dict[str, JobInfo]:
        future = asyncio.get_running_loop().run_in_executor(self._executor, self._query_blocking)
        try:
            return await asyncio.wait_for(future, self.timeout)
        except asyncio.TimeoutError:
            self._location = None
            raise QueryFailed(f"the schedd gave no answer within {self.timeout:g} s") from None
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the bindings' errors (HTCondorIOError, HTCondorLocateError, ...)
            self._location = None
            raise QueryFailed(f"the schedd query failed: {quote_prefix(str(e).strip(), 160)}", e) from None


class CondorPartition(HasTraits):
    """What one policy partition is in the pool (typed from the admin's dict)."""

    requirements = Unicode("", help="ClassAd expression ANDed into the job's requirements.")
    accounting_group = Unicode("", help="Accounting group charged when the request names no account.")


class CondorSpawner(PolicySpawnerMixin, batchspawner.CondorSpawner):
    """Start each user's Jupyter server as an HTCondor job, within the group resource policy."""

    metrics_backend = "condor"

    def __init__(self, **kwargs):
        close_batchspawner_api()  # the hub uses this spawner: batchspawner's route goes
        super().__init__(**kwargs)

    python_prefix = Unicode(
        help="""
        Prefix (venv or conda env) whose ``bin/jupyterhub-singleuser`` the job runs; it must be
        readable by every user on the execute nodes. Default: the hub's own ``sys.prefix``.
        """,
    ).tag(config=True)

    @default("python_prefix")
    def _python_prefix_default(self):
        return sys.prefix

    condor_submit_path = Unicode(
        "/usr/bin/condor_submit", help="Absolute path of condor_submit (sudo's secure_path replaces PATH)."
    ).tag(config=True)
    condor_rm_path = Unicode("/usr/bin/condor_rm", help="Absolute path of condor_rm.").tag(config=True)
    user_command_prefix = List(
        Unicode(),
        ["/usr/bin/sudo", "-n", "-u", "{username}", "--preserve-env={env_names}"],
        help="""
        argv prefix that runs condor_submit, condor_rm and the env-file writer as the job's unix
        account. ``{username}`` becomes the account's name; an element containing ``{env_names}``
        gets the comma-separated names of ``command_env_keep`` that are set (left out when none
        are). A hub that is not root needs a sudoers rule for these commands. Empty when the hub
        already runs as the user.
        """,
    ).tag(config=True)
    command_env_keep = List(
        Unicode(),
        ["CONDOR_CONFIG"],
        help="""
        Names of the hub's environment variables that condor_submit and condor_rm need (e.g.
        CONDOR_CONFIG) and receive. Nothing else of the hub's environment reaches them, and the
        job's environment never does (it travels in a 0600 file of the user's).
        """,
    ).tag(config=True)
    job_env_keep = List(
        Unicode(),
        ["CONDOR_CONFIG"],
        help="""
        Names of the hub's environment variables the job receives too (e.g. CONDOR_CONFIG, so
        the user's kernels can submit Dask worker jobs to the same pool).
        """,
    ).tag(config=True)
    job_name = Unicode(
        "science-gateway-jupyter",
        help="The GatewayJob attribute of every server job: lets site admins spot gateway jobs and one query find them.",
    ).tag(config=True)
    gateway_name = Unicode("science-gateway", help="Name of this gateway, the job attribute GatewayName.").tag(
        config=True
    )
    job_output = Unicode(
        "{homedir}/.science-gateway-condor-$(ClusterId).log",
        help="The job's output and error file; ``{homedir}`` and ``{username}`` are the unix account's.",
    ).tag(config=True)
    env_file_dir = Unicode(
        "{homedir}/.science-gateway/condor",
        help="""
        Folder (made by the user, mode 0700) of the files that carry each job's environment to
        the job (read and deleted by the job before the server starts); it must be on a file
        system the execute nodes share. ``{homedir}`` and ``{username}`` as in job_output.
        """,
    ).tag(config=True)
    partitions = Dict(
        help="""
        What each policy partition is in this pool: ``{"cpu": {"requirements": "TARGET.Site ==
        \\"A\\"", "accounting_group": "group_cpu"}}``. A partition not listed adds no requirement.
        """,
    ).tag(config=True)
    extra_requirements = Unicode(
        "", help="ClassAd expression ANDed into every job's requirements (e.g. the gateway's execute nodes)."
    ).tag(config=True)
    extra_attributes = Dict(
        Unicode(), help="Admin's job attributes for every job: name -> ClassAd expression (e.g. {'MaxJobRetirementTime': '0'})."
    ).tag(config=True)
    command_timeout = Float(60, help="Seconds before condor_submit or condor_rm is killed and the call fails.").tag(
        config=True
    )
    port_probe_interval = Float(
        0.1, help="Seconds between connection attempts to a starting server once its job runs."
    ).tag(config=True)
    port_min = Integer(20000, help="Lowest port the hub hands to a server (as SlurmSpawner.port_min).").tag(config=True)
    port_max = Integer(32767, help="Highest port the hub hands to a server.").tag(config=True)
    held_timeout = Float(
        30,
        help="""
        Seconds a spawn waits while its job is held (HoldReason on the spawn page) before it fails
        and the job is removed. 0: fail at once.
        """,
    ).tag(config=True)

    poller = Instance(
        CondorQueuePoller, help="The hub's shared schedd poller (configured as CondorQueuePoller)."
    )

    @default("poller")
    def _poller_default(self):
        return shared_poller(job_name=self.job_name, parent=self, cls=CondorQueuePoller)

    @validate("partitions")
    def _validate_partitions(self, proposal):
        for name, value in proposal["value"].items():
            if isinstance(value, CondorPartition):
                continue
            if not isinstance(value, dict) or set(value) - {"requirements", "accounting_group"}:
                raise ValueError(
                    f"CondorSpawner.partitions[{name!r}] must be a dict with requirements and/or accounting_group"
                )
        return {
            name: value if isinstance(value, CondorPartition) else CondorPartition(**value)
            for name, value in proposal["value"].items()
        }

    # the state of the current job (not configuration)
    _job_info = Instance(JobInfo, allow_none=True, help="The job as the last snapshot saw it.")
    _job_output = Unicode("", help="Path of the current job's output file.")

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
        account = self.unix_account()
        env.update(USER=account.pw_name, HOME=account.pw_dir)
        if account.pw_shell:
            env["SHELL"] = account.pw_shell
        return env

    def get_env(self):
        env = super().get_env()
        env["PATH"] = os.pathsep.join([os.path.join(self.python_prefix, "bin"), "/usr/local/bin", "/usr/bin", "/bin"])
        env.update({k: os.environ[k] for k in self.job_env_keep if k in os.environ})
        request = self.resource_request
        presets = DaskPresets(parent=self)
        if not presets.condor_requirements:
            # the worker jobs of a preset's partition go where the admin mapped that partition
            presets.condor_requirements = {
                name: target.requirements for name, target in self.partitions.items() if target.requirements
            }
        env.update(
            dask_environment(
                presets,
                backend="condor",
                groups=self.user_groups(),
                choices=self.policy.choices(self.user_groups()),
                account=request.account if request else "",
                comment=sanitize_comment(f"science-gateway={self.gateway_name} user={self.job_identity()}"),
            )
        )
        return env

    def command_env(self) -> dict:
        """The whole environment of condor_submit/condor_rm: ``command_env_keep`` of the hub's."""
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        env.update({k: os.environ[k] for k in self.command_env_keep if k in os.environ})
        return env

    def user_prefix(self, account: str) -> list[str]:
        names = [k for k in self.command_env_keep if k in os.environ]
        return expand_prefix(list(self.user_command_prefix), account, names)

    def partition_target(self, partition: str) -> PartitionTarget:
        target = self.partitions.get(partition)
        if target is None:
            return PartitionTarget()
        return PartitionTarget(requirements=target.requirements, accounting_group=target.accounting_group)

    # -- ports (shared with the Slurm spawner's bookkeeping) ------------------------------------

    def _pick_port(self) -> int:
        if self.port_max - self.port_min + 1 - len(_PORTS_IN_USE) <= 0:
            raise SpawnException("no free server port on the hub", reason="ports", status_code=503)
        while True:
            port = random.randint(self.port_min, self.port_max)
            if port not in _PORTS_IN_USE:
                _PORTS_IN_USE.add(port)
                return port

    def _release_port(self):
        for port in (self.port, self.server.port if self.server else 0):
            if port:
                _PORTS_IN_USE.discard(port)

    # -- commands ---------------------------------------------------------------------------

    async def run_command(self, cmd, input=None, env=None):
        """Run ``cmd`` (an argv list; never a shell string) with the command environment; return stdout."""
        result = await run_command(cmd, input=input, env=self.command_env(), timeout=self.command_timeout)
        return result.stdout.strip()

    def _account_path(self, template: str, account: pwd.struct_passwd) -> str:
        return template.replace("{homedir}", account.pw_dir).replace("{username}", account.pw_name)

    async def submit_batch_script(self):
        request = self.resource_request or self.validated_request(dict(self.user_options or {}))
        account = self.unix_account()
        prefix = self.user_prefix(account.pw_name)
        output = self._account_path(self.job_output, account)
        env_file = os.path.join(
            self._account_path(self.env_file_dir, account), f"{self.job_name}-{secrets.token_hex(8)}.env"
        )
        description = build_submit_description(
            request,
            command=self.job_command(),
            env_file=env_file,
            job_name=self.job_name,
            identity=self.job_identity(),
            gateway=self.gateway_name,
            unix_user=account.pw_name,
            workdir=account.pw_dir,
            output=output,
            target=self.partition_target(request.partition),
            extra_requirements=self.extra_requirements,
            extra_attributes=dict(self.extra_attributes),
        )
        submit = [*prefix, self.condor_submit_path, "-terse"]
        self.log.info("Submitting HTCondor job for %s as %s:\n%s", self._log_name, account.pw_name, description)
        try:
            await self.run_command(build_write_env_argv(prefix, env_file), input=build_env_file(self.get_env()))
            out = await self.run_command(submit, input=description)
            self.job_id = parse_cluster_id(out)
        except (CommandError, ValueError) as e:
            self.job_id = ""
            message = getattr(e, "stderr", "") or str(e)
            raise SpawnException(
                f"HTCondor refused the job: {message.strip()[-300:]}", reason="condor_submit", status_code=500
            ) from None
        self._job_output = output.replace("$(ClusterId)", self.job_id.split(".")[0])
        self.log.info("HTCondor job %s submitted for %s", self.job_id, self._log_name)
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
        return self._job_info is not None and self._job_info.pending

    def state_isrunning(self):
        return self._job_info is not None and self._job_info.running

    def state_gethost(self):
        return self._job_info.host if self._job_info is not None else ""

    async def cancel_batch_job(self):
        account = self.unix_account()
        await self.run_command(build_rm_argv(self.condor_rm_path, self.user_prefix(account.pw_name), self.job_id))

    async def remove_dask_workers(self, job_id):
        """Remove the Dask worker jobs the session ``job_id`` started (GatewayJob named after it)."""
        name = worker_job_name(DaskPresets(parent=self).job_name, job_id.split(".")[0])
        try:
            account = self.unix_account()
            await self.run_command(build_rm_workers_argv(self.condor_rm_path, self.user_prefix(account.pw_name), name))
        except (CommandError, ValueError, SpawnException) as e:
            # condor_rm exits non-zero when no job matched: the usual case (no workers left)
            self.log.debug("removing Dask workers %s of %s: %s", name, self._log_name, e)

    # -- the spawner lifecycle -------------------------------------------------------------

    async def start_job(self, request: ResourceRequest, account: pwd.struct_passwd):
        """Submit, wait until the job runs and its server accepts connections."""
        self._job_info = None
        self.port = self._pick_port()
        try:
            return await self._submit_and_wait()
        except BaseException:
            self._release_port()
            raise

    async def _submit_and_wait(self):
        await self.submit_batch_script()
        job_id = self.job_id
        self.poller.watch(job_id, submitted_at=time.time(), starting=True)
        submitted = time.monotonic()
        held_since = None
        try:
            while True:
                status = await self.query_job_status()
                if status == batchspawner.JobStatus.RUNNING:
                    self.observe_queue_wait(time.monotonic() - submitted)
                    break
                if status == batchspawner.JobStatus.NOTFOUND:
                    raise self._job_ended_error(job_id)
                held = self._job_info is not None and self._job_info.held
                if not held:
                    held_since = None
                elif held_since is None:
                    held_since = time.monotonic()
                    self.log.warning("HTCondor job %s of %s is held: %s", job_id, self._log_name,
                                     self._job_info.hold_reason)
                if held and time.monotonic() - held_since >= self.held_timeout:
                    raise self._held_error(job_id)
                await self.poller.next_snapshot(timeout=max(5.0, 3 * self.poller.fast_interval))
            host = self.state_gethost()
            await self._wait_for_port(job_id, host, self.port)
        finally:
            self.poller.started(job_id)
        self.log.info("HTCondor job %s of %s runs on %s:%s", job_id, self._log_name, host, self.port)
        return host, self.port

    async def _wait_for_port(self, job_id, host, port):
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
        what = info.describe() if info is not None and info.finished else f"Job {job_id} left the HTCondor queue"
        log = self._job_output
        self.poller.unwatch(job_id)
        self._release_port()
        self.clear_state()
        return SpawnException(
            f"Your server's HTCondor job ended before Jupyter started. {what}."
            + (f" The job's output is in {log}." if log else ""),
            reason="job_ended",
            status_code=500,
        )

    def _held_error(self, job_id) -> SpawnException:
        """The spawn gives up on a held job; the hub's clean-up after a failed start (``stop``) removes it."""
        reason = self._job_info.hold_reason if self._job_info else ""
        return SpawnException(
            f"Your server cannot start: HTCondor holds job {job_id} ({reason or 'no reason given'}). "
            f"The job was removed. Change the request, or ask the site admins.",
            reason="job_held",
            status_code=503,
        )

    def progress_message(self) -> str:
        """What the spawn page shows now: the queue's word on the job, and any trouble."""
        info = self._job_info
        if info is not None:
            message = info.describe()
        elif self.job_id:
            message = f"Job {self.job_id} submitted to HTCondor; waiting for the queue to answer"
        else:
            message = "Submitting the job to HTCondor"
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
        self.log.info("HTCondor job %s of %s is gone: %s", self.job_id, self._log_name, self._job_info)
        self.poller.unwatch(self.job_id)
        self._release_port()
        self.clear_state()
        return 1

    async def stop(self, now=False):
        job_id = self.job_id
        try:
            if not job_id:
                return
            self.log.info("Removing HTCondor job %s of %s", job_id, self._log_name)
            try:
                await self.cancel_batch_job()
            except (CommandError, ValueError, SpawnException) as e:
                # a job that already left the queue (e.g. while the hub was down) cannot be removed
                self.log.warning("condor_rm %s: %s", job_id, e)
            await self.remove_dask_workers(job_id)
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
        """After a hub restart: the URL from the job's host (the snapshot) and the port in our state."""
        host = self.state_gethost()
        if self.server and host and self.port:
            return f"{self.server.proto}://{host}:{self.port}{self.server.base_url}"
        return await super().get_url()

    def clear_state(self):
        super().clear_state()
        self._job_info = None
        self._job_output = ""
