"""Dask clusters from presets, with the user's limits enforced (runs in the kernel).

:func:`cluster` builds a :class:`GatewaySLURMCluster` (``dask_jobqueue.SLURMCluster``) in a Slurm
session, a :class:`GatewayHTCondorCluster` (``dask_jobqueue.HTCondorCluster``) in an HTCondor
session, or a :class:`GatewayLocalCluster` (``distributed.LocalCluster``) in the embedded default,
from the presets and limits the hub resolved for this user (:class:`~.presets.UserDaskConfig`).
``scale``/``adapt`` beyond the limits raise :class:`~.builders.DaskLimitError`.

Lifecycle: ``cluster.close()`` cancels the worker jobs; distributed closes every live cluster at
interpreter exit (a kernel shut down or restarted); a killed kernel's workers exit after
``DaskPresets.death_timeout`` without a scheduler; and the Slurm (HTCondor) spawner cancels
(removes) the session's worker jobs (by job name) when the session stops.
"""

from __future__ import annotations

import math
import os
import pwd
import sys
import weakref

from dask.utils import parse_bytes
from dask_jobqueue import HTCondorCluster, SLURMCluster
from dask_jobqueue.htcondor import HTCondorJob
from dask_jobqueue.slurm import SLURMJob
from distributed import LocalCluster
from distributed.deploy.adaptive import Adaptive
from distributed.utils import get_ip

from .builders import (
    array_job_header,
    array_worker_command,
    check_workers,
    checked_cluster_kwargs,
    condor_cluster_kwargs,
    condor_session_id,
    local_cluster_kwargs,
    slurm_cluster_kwargs,
    workers_for,
)
from ..core.activity import remove_cluster_marker, write_cluster_marker
from ..core.presets import UserDaskConfig, worker_job_name
from . import dashboard_guard

#: this kernel's live gateway clusters: the user's limit counts all of them
_LIVE: weakref.WeakSet = weakref.WeakSet()


class _Limits:
    """Limit bookkeeping shared by both cluster kinds (a mixin before the Dask class)."""

    def _setup_limits(self, preset_name: str, user: UserDaskConfig):
        preset = user.presets[preset_name]
        self.preset_name = preset_name
        self.preset_max_workers = preset.max_workers
        self.user_max_workers = user.max_workers
        self.user_groups = user.groups
        self._reserved = 0
        _LIVE.add(self)

    def _others(self) -> int:
        return sum(c._reserved for c in list(_LIVE) if c is not self and c.status.name not in ("closing", "closed"))

    def _check_and_reserve(self, workers: int):
        check_workers(
            workers,
            preset_name=self.preset_name,
            preset_max=self.preset_max_workers,
            user_max=self.user_max_workers,
            others=self._others(),
            groups=self.user_groups,
            workers_per_job=self._workers_per_job(),
        )
        self._reserved = workers

    def _allowed_maximum(self) -> int:
        return max(0, min(self.preset_max_workers, self.user_max_workers - self._others()))

    def _checked_adapt_kwargs(self, kwargs: dict) -> dict:
        """Adaptive's maximum: the limit when not given, an error when beyond it."""
        per_job = self._workers_per_job()
        if kwargs.get("maximum_jobs") is not None:
            kwargs["maximum"] = kwargs.pop("maximum_jobs") * per_job
        if kwargs.get("minimum_jobs") is not None:
            kwargs["minimum"] = kwargs.pop("minimum_jobs") * per_job
        maximum = kwargs.get("maximum")
        if maximum is None or maximum == math.inf:
            maximum = self._allowed_maximum() // per_job * per_job
        maximum = int(maximum)
        self._check_and_reserve(max(maximum, int(kwargs.get("minimum") or 0)))
        if per_job > 1:
            # whole jobs only: a partial job would be rounded up past the maximum
            kwargs["maximum"] = maximum // per_job * per_job
            kwargs["minimum"] = math.ceil(int(kwargs.get("minimum") or 0) / per_job) * per_job
        else:
            kwargs["maximum"] = maximum
        return kwargs

    async def _start(self):
        await super()._start()
        # the dashboard (loopback, no login of its own) answers only this user's connections
        http_server = getattr(self.scheduler, "http_server", None)
        if http_server is not None:
            dashboard_guard.guard(http_server)
        # while it runs, the user's server counts as active for the idle culler (core.activity)
        from jupyter_core.paths import jupyter_runtime_dir

        marker = write_cluster_marker(jupyter_runtime_dir(), os.getpid(), f"{id(self):x}", self.preset_name)
        self._activity_marker = weakref.finalize(self, remove_cluster_marker, marker)

    async def _close(self):
        try:
            await super()._close()
        finally:
            marker = getattr(self, "_activity_marker", None)
            if marker is not None:
                marker()  # removes the file once

    @property
    def limits(self) -> dict:
        """What this cluster may still grow to, for people and widgets."""
        return {"preset": self.preset_name, "max_workers": self._allowed_maximum(), "reserved": self._reserved}


class GatewaySLURMJob(SLURMJob):
    """``SLURMJob`` with the site's submit/cancel commands, and job arrays (one sbatch, many workers).

    With ``array_tasks`` > 1 one job stands for ``array_tasks`` workers, as with ``processes``, but
    each worker is an array task of its own with ``task_cores`` cores and ``task_memory_gb`` GiB.
    """

    def __init__(self, *args, submit_command="sbatch", cancel_command="scancel", array_tasks=0, task_cores=1,
                 task_memory_gb=1, **kwargs):
        super().__init__(*args, **kwargs)
        self.submit_command = submit_command
        self.cancel_command = cancel_command
        if array_tasks > 1:
            self.job_header = array_job_header(self.job_header, tasks=array_tasks, cores=task_cores,
                                               memory_gb=task_memory_gb)
            self._command_template = array_worker_command(self._command_template)


class _GatewayJobQueue(_Limits):
    """What both batch-system clusters add to dask-jobqueue: limits on scale/adapt, whole jobs,
    the credential files removed at close (a mixin before the dask-jobqueue cluster class)."""

    def _workers_per_job(self) -> int:
        return self._dummy_job.worker_processes

    async def _close(self):
        try:
            await super()._close()
        finally:
            # dask-jobqueue keeps the credential files open (NamedTemporaryFile): closing deletes them
            for name in ("_job_ca_file", "_job_cert", "_job_key"):
                handle = self.__dict__.pop(name, None)
                if handle is not None:
                    handle.close()

    def scale(self, n=None, jobs=0, memory=None, cores=None):
        jobs, _ = workers_for(n, jobs, self._workers_per_job())
        if memory is not None:
            jobs = max(jobs, math.ceil(parse_bytes(memory) / self._memory_per_worker()))
        if cores is not None:
            jobs = max(jobs, math.ceil(cores / self._threads_per_worker()))
        self._check_and_reserve(jobs * self._workers_per_job())
        return super().scale(jobs=jobs)

    def adapt(self, *args, **kwargs):
        if self._workers_per_job() > 1:
            # retire a job's workers together, only when all of them are idle: closing one worker
            # of a job cancels the whole job, busy siblings included
            kwargs.setdefault("worker_key", job_of_worker)
            kwargs.setdefault("Adaptive", WholeJobAdaptive)
        return super().adapt(*args, **self._checked_adapt_kwargs(kwargs))


class GatewaySLURMCluster(_GatewayJobQueue, SLURMCluster):
    """``SLURMCluster`` from a preset: the user's account and identity, limits enforced, TLS.

    dask-jobqueue writes the workers' copy of the cluster's temporary credentials to
    ``shared_temp_directory`` (``DaskPresets.tls_directory``); closing the cluster removes them.
    """

    job_cls = GatewaySLURMJob

    def __init__(self, *, preset_name: str, user: UserDaskConfig, **kwargs):
        self._setup_limits(preset_name, user)
        kwargs.setdefault("submit_command", user.settings.submit_command)
        kwargs.setdefault("cancel_command", user.settings.cancel_command)
        super().__init__(**kwargs)


class GatewayHTCondorJob(HTCondorJob):
    """``HTCondorJob`` with the site's condor_submit and condor_rm."""

    def __init__(self, *args, submit_command="condor_submit", cancel_command="condor_rm", **kwargs):
        super().__init__(*args, **kwargs)
        # dask-jobqueue builds these from its class attributes; the site's commands replace the program
        self.submit_command = self.submit_command.replace(HTCondorJob.submit_command, submit_command, 1)
        self.cancel_command = self.cancel_command.replace(HTCondorJob.cancel_command, cancel_command, 1)


class GatewayHTCondorCluster(_GatewayJobQueue, HTCondorCluster):
    """``HTCondorCluster`` from a preset: the same account, identity, limits and TLS as on Slurm."""

    job_cls = GatewayHTCondorJob

    def __init__(self, *, preset_name: str, user: UserDaskConfig, **kwargs):
        self._setup_limits(preset_name, user)
        kwargs.setdefault("submit_command", user.settings.condor_submit_command)
        kwargs.setdefault("cancel_command", user.settings.condor_cancel_command)
        super().__init__(**kwargs)


def job_of_worker(worker_state) -> str:
    """The job a worker belongs to: its name without the ``-<index>`` Dask adds per worker of a job."""
    return str(worker_state.name).rsplit("-", 1)[0]


class WholeJobAdaptive(Adaptive):
    """``Adaptive`` whose target is a whole number of jobs.

    Stock ``Adaptive`` counts workers: with several workers per job a target of 13 asks for 4 jobs
    (16 workers), then "closes" the 3 extra not-yet-arrived workers, which cancels a whole pending
    job, and so on at every step: jobs submitted and cancelled without doing any work.
    """

    async def target(self):
        wanted = await super().target()
        per_job = self.cluster._workers_per_job()
        return math.ceil(wanted / per_job) * per_job


class GatewayLocalCluster(_Limits, LocalCluster):
    """``LocalCluster`` from the same presets (the embedded default), limits enforced."""

    def __init__(self, *, preset_name: str, user: UserDaskConfig, **kwargs):
        self._setup_limits(preset_name, user)
        super().__init__(**kwargs)

    def _workers_per_job(self) -> int:
        return 1

    def scale(self, n=0, memory=None, cores=None):
        if memory is not None:
            n = max(n, math.ceil(parse_bytes(memory) / self._memory_per_worker()))
        if cores is not None:
            n = max(n, math.ceil(cores / self._threads_per_worker()))
        self._check_and_reserve(n)
        return super().scale(n)

    def adapt(self, *args, **kwargs):
        return super().adapt(*args, **self._checked_adapt_kwargs(kwargs))


def user_config(environ=None) -> UserDaskConfig:
    """This user's presets and limits, as the hub handed them to the server."""
    return UserDaskConfig.from_environ(os.environ if environ is None else environ)


def cluster(name: str, *, environ=None, **cluster_kwargs):
    """A ready cluster of the admin's preset ``name`` (no workers yet: ``scale``/``adapt`` it).

    ``cluster_kwargs`` may be only ``asynchronous``, ``loop``, ``name``, ``silence_logs`` and
    ``job_cls`` (:data:`~.builders.CALLER_KWARGS`), passed through to the Dask cluster class;
    anything else is a ``TypeError``: resources, account, security and networking come from the
    preset and the site only. The cluster accepts only holders of its own temporary TLS
    credentials (this kernel and its workers).
    """
    environ = os.environ if environ is None else environ
    cluster_kwargs = checked_cluster_kwargs(cluster_kwargs)
    user = user_config(environ)
    preset = user.preset(name)
    if user.backend == "local":
        kwargs = local_cluster_kwargs(preset)
        return GatewayLocalCluster(preset_name=name, user=user, **kwargs, **cluster_kwargs)
    settings = user.settings
    if user.backend == "condor":
        job_ad = environ.get("_CONDOR_JOB_AD", "")
        session = condor_session_id(open(job_ad).read()) if job_ad and os.path.isfile(job_ad) else ""
        kwargs = condor_cluster_kwargs(
            name,
            preset,
            settings,
            account=user.account,
            comment=user.comment,
            unix_user=pwd.getpwuid(os.getuid()).pw_name,
            python=sys.executable,
            job_name=worker_job_name(settings.job_name, session),
            log_directory=_user_directory(settings.log_directory),
            tls_directory=_user_directory(settings.tls_directory, private=True),
            scheduler_host="" if settings.interface else get_ip(),
        )
        return GatewayHTCondorCluster(preset_name=name, user=user, **kwargs, **cluster_kwargs)
    kwargs = slurm_cluster_kwargs(
        name,
        preset,
        settings,
        account=user.account,
        comment=user.comment,
        python=sys.executable,
        job_name=worker_job_name(settings.job_name, environ.get("SLURM_JOB_ID", "")),
        log_directory=_user_directory(settings.log_directory),
        tls_directory=_user_directory(settings.tls_directory, private=True),
        scheduler_host="" if settings.interface else get_ip(),
    )
    return GatewaySLURMCluster(preset_name=name, user=user, **kwargs, **cluster_kwargs)


def _user_directory(template: str, *, private: bool = False) -> str | None:
    """``template`` with ``~`` as the account's home, created at mode 0700 (the worker jobs' files).

    A folder of ours is kept at 0700; ``private`` (the credentials) also refuses a folder another
    uid owns. Without ``private`` (the logs) such a folder is the admin's choice and left alone.
    """
    if not template:
        if private:
            raise ValueError("DaskPresets.tls_directory is empty: set it to a folder the worker jobs can read")
        return None
    if template.startswith("~"):
        # the account's home, not $HOME: batch jobs started through sudo may carry another one
        template = pwd.getpwuid(os.getuid()).pw_dir + template[1:]
    path = template
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.stat(path)
    if info.st_uid != os.getuid():
        if private:
            raise PermissionError(
                f"{path} (DaskPresets.tls_directory) belongs to uid {info.st_uid}, not to you: remove it or ask "
                "the gateway admins to point tls_directory at a folder of your own"
            )
    elif info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def presets(environ=None) -> dict:
    """The presets this user may use, with their limits (what ``GET /gateway/api/dask/presets`` returns)."""
    return user_config(environ).describe()
