"""Pure builders: from a preset and a user's resolved config to the kwargs of a Dask cluster.

No I/O and no Dask import here: every function takes plain values and returns plain values, so the
whole mapping from what an admin wrote to what ``sbatch`` sees is tested with plain asserts.
"""

from __future__ import annotations

import math

from ..core.presets import DaskPreset, DaskPresets, worker_lifetime
from ..core.text import format_walltime, sanitize_comment


#: the dashboard: a free port on loopback (the user's server, on the kernel's node, proxies it)
DASHBOARD_ADDRESS = "127.0.0.1:0"
#: what ``cluster(name, **cluster_kwargs)`` passes through to the Dask cluster class
#: (``job_cls``: a GatewaySLURMJob subclass, e.g. an instrumented one in benchmarks/dask_bench.py)
CALLER_KWARGS = ("asynchronous", "job_cls", "loop", "name", "silence_logs")


class DaskLimitError(ValueError):
    """A scale/adapt request beyond what the user's groups allow; the message says the limit."""


def worker_comment(comment: str, preset_name: str) -> str:
    """The worker job's ``--comment``: the session's identity comment plus the preset."""
    text = f"{comment} dask={preset_name}".strip()
    return sanitize_comment(text)


def slurm_cluster_kwargs(
    preset_name: str,
    preset: DaskPreset,
    settings: DaskPresets,
    *,
    account: str,
    comment: str,
    python: str,
    job_name: str,
    log_directory: str | None,
    tls_directory: str,
    scheduler_host: str = "",
) -> dict:
    """``dask_jobqueue.SLURMCluster(**kwargs)`` for one preset and one user's session.

    ``account`` is the session's (it wins over the preset's); ``comment`` carries the user's
    identity as the session job's does; ``python`` is the kernel's own interpreter, so workers run
    the kernel's environment.

    Only the owner gets in: ``security=True`` makes dask-jobqueue create temporary credentials
    for this cluster alone (``Security.temporary()``: mutual TLS, ``tls://`` addresses), and it
    writes the workers' copy of them to ``tls_directory`` (files of mode 0600, in a folder the
    caller keeps at 0700) for the job script to name. The scheduler listens on
    ``DaskPresets.interface``, or when that is empty on ``scheduler_host`` (the node's own
    address), never on every address; the dashboard on loopback only, for the user's server's
    proxy.
    """
    if not settings.interface and not scheduler_host:
        raise ValueError("scheduler_host is needed when DaskPresets.interface is empty")
    lifetime, stagger = worker_lifetime(preset.walltime_minutes, settings.lifetime_margin_minutes)
    kwargs = {
        "n_workers": 0,
        "cores": preset.job_cores(),
        "processes": preset.workers_per_job,
        "memory": f"{preset.job_memory_gb()}GiB",
        "walltime": format_walltime(preset.walltime_minutes),
        "queue": preset.partition or None,
        "account": account or preset.account or None,
        "job_name": job_name,
        # quoted: the comment has spaces, and #SBATCH lines are split on them (the comment holds no quotes)
        "job_extra_directives": [f'--comment="{worker_comment(comment, preset_name)}"', *preset.extra_directives],
        "worker_extra_args": ["--lifetime", f"{lifetime}m", "--lifetime-stagger", f"{stagger}m"],
        "death_timeout": settings.death_timeout,
        "python": python,
        "job_script_prologue": list(settings.job_script_prologue),
        "log_directory": log_directory,
        "security": True,
        "shared_temp_directory": tls_directory,
        # one scheduler per kernel on a shared node: let the OS pick the dashboard's port; loopback
        # only: the user's server (on this node) proxies it
        "scheduler_options": {"dashboard_address": DASHBOARD_ADDRESS},
    }
    if settings.interface:
        kwargs["interface"] = settings.interface
    else:
        kwargs["scheduler_options"]["host"] = scheduler_host
    several = preset.workers_per_job > 1
    kwargs["nanny"] = preset.nanny or (several and preset.job_layout == "processes")
    if several and preset.job_layout == "array":
        # Dask still counts one "job" of workers_per_job workers; the job class turns it into an array
        kwargs.update(array_tasks=preset.workers_per_job, task_cores=preset.cores, task_memory_gb=preset.memory_gb)
    return kwargs


def condor_session_id(job_ad: str) -> str:
    """The session's cluster id from the job ad HTCondor gives each job (``$_CONDOR_JOB_AD``), or ``""``."""
    for line in job_ad.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == "ClusterId" and value.strip().isdigit():
            return value.strip()
    return ""


def _classad_text(value: str) -> str:
    """A ClassAd string literal of a value that holds no quote, backslash or newline."""
    if any(c in value for c in '"\\\r\n'):
        raise ValueError(f"not a plain job attribute value: {value!r}")
    return f'"{value}"'


def condor_cluster_kwargs(
    preset_name: str,
    preset: DaskPreset,
    settings: DaskPresets,
    *,
    account: str,
    comment: str,
    unix_user: str,
    python: str,
    job_name: str,
    log_directory: str | None,
    tls_directory: str,
    scheduler_host: str = "",
) -> dict:
    """``dask_jobqueue.HTCondorCluster(**kwargs)`` for one preset and one user's session.

    The same guarantees as :func:`slurm_cluster_kwargs` (the session's account, the user's
    identity, mutual TLS with the cluster's own credentials, the scheduler on one interface, the
    dashboard on loopback, workers retiring before the walltime); in HTCondor's terms: the
    identity is the job attribute ``GatewayUser``, ``GatewayJob`` the name the session's stop
    removes by, the account ``accounting_group``, the walltime a ``periodic_remove``, the partition
    the admin's requirements expression (``DaskPresets.condor_requirements``). ``workers_per_job``
    workers are processes of one job (HTCondor has no job arrays of one submit here).
    """
    if not settings.interface and not scheduler_host:
        raise ValueError("scheduler_host is needed when DaskPresets.interface is empty")
    lifetime, stagger = worker_lifetime(preset.walltime_minutes, settings.lifetime_margin_minutes)
    directives = {
        "+GatewayJob": _classad_text(job_name),
        "+GatewayUser": _classad_text(worker_comment(comment, preset_name)),
        "+GatewayPartition": _classad_text(preset.partition),
        "periodic_remove": f"(JobStatus == 2) && (time() - JobCurrentStartDate > {preset.walltime_minutes * 60})",
    }
    account = account or preset.account
    if account:
        directives["accounting_group"] = account
        directives["accounting_group_user"] = unix_user
    requirements = settings.condor_requirements.get(preset.partition, "") if preset.partition else ""
    if requirements:
        if any(c in requirements for c in "\r\n"):
            raise ValueError("DaskPresets.condor_requirements values must be one line")
        directives["requirements"] = requirements
    several = preset.workers_per_job > 1
    kwargs = {
        "n_workers": 0,
        "cores": preset.job_cores(),
        "processes": preset.workers_per_job,
        "memory": f"{preset.job_memory_gb()}GiB",
        "disk": "1GiB",
        "job_extra_directives": directives,
        "worker_extra_args": ["--lifetime", f"{lifetime}m", "--lifetime-stagger", f"{stagger}m"],
        "death_timeout": settings.death_timeout,
        "python": python,
        "job_script_prologue": list(settings.job_script_prologue),
        "log_directory": log_directory,
        "security": True,
        "shared_temp_directory": tls_directory,
        "scheduler_options": {"dashboard_address": DASHBOARD_ADDRESS},
        "nanny": preset.nanny or several,
    }
    if settings.interface:
        kwargs["interface"] = settings.interface
    else:
        kwargs["scheduler_options"]["host"] = scheduler_host
    return kwargs


def array_job_header(header: str, *, tasks: int, cores: int, memory_gb: int) -> str:
    """dask-jobqueue's ``#SBATCH`` header, turned into a job array of ``tasks`` one-worker tasks."""
    lines = []
    for line in header.splitlines():
        if line.startswith("#SBATCH --cpus-per-task="):
            line = f"#SBATCH --cpus-per-task={cores}"
        elif line.startswith("#SBATCH --mem="):
            line = f"#SBATCH --mem={memory_gb}G"
        elif line.startswith(("#SBATCH -e ", "#SBATCH -o ")):
            line = line.replace("%J", "%A_%a")
        lines.append(line)
    lines.append(f"#SBATCH --array=0-{tasks - 1}")
    return "\n".join(lines)


def array_worker_command(command: str) -> str:
    """The worker command for one array task: one worker, named ``NAME-<task id>``.

    The names match the ones Dask expects of a job of several workers (``NAME-0``, ``NAME-1``, ...).
    """
    words = command.split(" ")
    out = []
    skip = False
    for i, word in enumerate(words):
        if skip:
            skip = False
            continue
        if word == "--nworkers":
            skip = True
            continue
        if i > 0 and words[i - 1] == "--name":
            word = f"{word}-${{SLURM_ARRAY_TASK_ID}}"
        out.append(word)
    return " ".join(out)


def local_cluster_kwargs(preset: DaskPreset) -> dict:
    """``distributed.LocalCluster(**kwargs)`` for the same preset (the embedded default).

    The same protection as on Slurm: temporary credentials of its own (``tls://``), scheduler and
    dashboard on loopback.
    """
    return {
        "n_workers": 0,
        "threads_per_worker": preset.cores,
        "memory_limit": f"{preset.memory_gb}GiB",
        "processes": True,
        "security": True,
        "host": "127.0.0.1",
        "dashboard_address": DASHBOARD_ADDRESS,
    }


def checked_cluster_kwargs(cluster_kwargs: dict) -> dict:
    """What a caller of ``cluster(name, **cluster_kwargs)`` may add: :data:`CALLER_KWARGS` only.

    Resources, account, identity, security and networking come from the preset and the site;
    anything else is refused (not silently applied, not silently dropped).
    """
    unknown = sorted(set(cluster_kwargs) - set(CALLER_KWARGS))
    if unknown:
        raise TypeError(
            f"cluster() does not take {', '.join(unknown)}: resources, account, security and networking come "
            f"from the preset (ask the gateway admins for another preset); it takes only {', '.join(CALLER_KWARGS)}"
        )
    return dict(cluster_kwargs)


def workers_for(n: int | None, jobs: int, workers_per_job: int) -> tuple[int, int]:
    """``(jobs, workers)`` that ``scale(n=..., jobs=...)`` really asks for (whole jobs)."""
    if n is not None:
        jobs = math.ceil(n / workers_per_job)
    return jobs, jobs * workers_per_job


def check_workers(requested: int, *, preset_name: str, preset_max: int, user_max: int, others: int,
                  groups=(), workers_per_job: int = 1) -> None:
    """Raise :class:`DaskLimitError` when ``requested`` workers exceed the preset's or the user's limit.

    ``others`` are the workers the user's other live clusters (same kernel) hold.
    """
    limit = max(0, min(preset_max, user_max - others))
    if requested <= limit:
        return
    who = f"your groups ({', '.join(groups)})" if groups else "you"
    held = f"; your other clusters hold {others}" if others else ""
    if workers_per_job > 1:
        held += f" (workers come in whole jobs of {workers_per_job})"
    raise DaskLimitError(
        f"preset {preset_name!r} allows at most {limit} workers for {who}{held}; you asked for {requested}. "
        f"Ask for fewer (e.g. cluster.scale({limit}) or cluster.adapt(maximum={limit})), close other clusters, "
        "or ask the gateway admins for a higher max_dask_workers."
    )
