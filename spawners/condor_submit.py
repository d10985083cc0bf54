"""Pure builders for HTCondor: the submit description, the job's launcher, argv, the queue's answer.

No I/O here: every function takes plain values and returns plain values, so the whole mapping from
a validated :class:`~science_gateway.core.policy.ResourceRequest` to what the schedd sees is tested
with plain asserts (the model is :mod:`.slurm_script`).

- :func:`build_submit_description`: the text ``condor_submit`` reads on stdin. Resources become
  ``request_cpus``/``request_memory``/``request_gpus``; the partition becomes the admin's
  requirements expression (:class:`PartitionTarget`); the walltime a ``periodic_remove``; the
  account ``accounting_group``; the user's identity the job attributes ``GatewayUser``,
  ``GatewayName`` and ``GatewayJob`` (what the one shared query filters on). Every value is checked
  to be one line, so nothing can add a submit command.
- The job's environment (which holds the server's API token) is never in the submit description
  nor in the job ad, which every user of a pool may read (``condor_q -l``): it travels in a file of
  the user's, mode 0600 (:func:`build_env_file`), that the job's launcher (:data:`LAUNCHER`) reads
  and deletes before it runs the server.
- :func:`parse_job_ad` turns a job ad from the schedd (a dict) into :class:`JobInfo`, which says
  what the spawn page shows: the hold reason, why an idle job has not matched yet.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from ..core.policy import ResourceRequest
from ..core.text import sanitize_comment

#: JobStatus codes (HTCondor's job ad attribute)
IDLE, RUNNING, REMOVED, COMPLETED, HELD, TRANSFERRING_OUTPUT, SUSPENDED = 1, 2, 3, 4, 5, 6, 7
STATUS_NAMES = {
    IDLE: "idle", RUNNING: "running", REMOVED: "removed", COMPLETED: "completed", HELD: "held",
    TRANSFERRING_OUTPUT: "transferring output", SUSPENDED: "suspended",
}

#: the job ad attributes the shared query asks for (the projection)
QUERY_ATTRS = (
    "ClusterId", "ProcId", "JobStatus", "Owner", "RemoteHost", "HoldReason", "LastRejMatchReason",
    "GatewayUser", "GatewayPartition", "RemoveReason", "ExitCode", "EnteredCurrentStatus",
)

#: the job's launcher: ``/bin/sh -c LAUNCHER science-gateway-job ENV_FILE COMMAND...``; it exports
#: the variables of ENV_FILE, deletes the file, and execs the server command
LAUNCHER = 'set -a && . "$1" && set +a && rm -f -- "$1" && shift && exec "$@"'

#: names of HTCondor job attributes an admin may add (``extra_attributes``)
_ATTR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class PartitionTarget:
    """What a policy partition means in an HTCondor pool (the admin's choice):
    ``requirements`` is a ClassAd expression ANDed into the job's requirements (e.g.
    ``TARGET.SiteGroup == "astro"``); ``accounting_group`` is the group charged when the request
    names no account."""

    requirements: str = ""
    accounting_group: str = ""


@dataclass(frozen=True)
class JobInfo:
    """One job as the last schedd query saw it."""

    job_id: str
    status: int
    owner: str = ""
    host: str = ""
    hold_reason: str = ""
    idle_reason: str = ""
    partition: str = ""
    remove_reason: str = ""

    @property
    def pending(self) -> bool:
        return self.status in (IDLE, HELD, SUSPENDED)

    @property
    def running(self) -> bool:
        return self.status in (RUNNING, TRANSFERRING_OUTPUT)

    @property
    def held(self) -> bool:
        return self.status == HELD

    @property
    def finished(self) -> bool:
        return self.status in (REMOVED, COMPLETED)

    @property
    def state(self) -> str:
        return STATUS_NAMES.get(self.status, f"status {self.status}")

    def describe(self) -> str:
        """What a user should read about this job (progress messages, errors)."""
        where = f" for partition {self.partition}" if self.partition else ""
        if self.held:
            return f"Job {self.job_id} is held{where}: {self.hold_reason or 'no reason given'}"
        if self.status == IDLE:
            text = f"Job {self.job_id} is idle in the HTCondor queue{where}"
            return text + (f", not matched yet: {self.idle_reason}" if self.idle_reason else ", waiting for a match")
        if self.running:
            return f"Job {self.job_id} is running on {self.host or '?'}; waiting for Jupyter to answer"
        text = f"Job {self.job_id} ended: {self.state}"
        return text + (f" ({self.remove_reason})" if self.remove_reason else "")


def one_line(name: str, value: str) -> str:
    """``value`` if it is one line of printable text, else ValueError (nothing may add a command)."""
    if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
        raise ValueError(f"{name} must be one line of text")
    return value


def classad_string(value: str) -> str:
    """A ClassAd string literal of ``value`` (backslashes and double quotes escaped)."""
    one_line("a ClassAd string", value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def no_macros(value: str) -> str:
    """``value`` with ``$(`` written as ``$(DOLLAR)(`` so condor_submit expands no macro in it."""
    return value.replace("$(", "$(DOLLAR)(")


def condor_arguments(args: list[str]) -> str:
    """The ``arguments`` value in HTCondor's new syntax: the whole list in double quotes, each
    argument in single quotes (``'`` doubled inside, ``"`` doubled), no macro expanded."""
    quoted = []
    for arg in args:
        one_line("a job argument", arg)
        quoted.append("'" + arg.replace("'", "''").replace('"', '""') + "'")
    return no_macros('"' + " ".join(quoted) + '"')


def build_env_file(env: dict[str, str]) -> str:
    """The job environment as ``NAME='value'`` lines for the launcher's ``.`` (shell-quoted)."""
    lines = []
    for name in sorted(env):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"not an environment variable name: {name!r}")
        lines.append(f"{name}={shlex.quote(env[name])}")
    return "\n".join(lines) + "\n"


def build_submit_description(
    request: ResourceRequest,
    *,
    command: list[str],
    env_file: str,
    job_name: str,
    identity: str,
    gateway: str,
    unix_user: str,
    workdir: str,
    output: str,
    target: PartitionTarget = PartitionTarget(),
    extra_requirements: str = "",
    extra_attributes: dict[str, str] | None = None,
) -> str:
    """The submit description (``condor_submit -terse -`` reads it) of one server job.

    ``command`` is the server's argv; the job runs it through :data:`LAUNCHER` with ``env_file``
    (see :func:`build_env_file`). ``output`` may hold ``$(ClusterId)``. ``extra_attributes`` are the
    admin's own job attributes (name -> ClassAd expression).
    """
    walltime = request.walltime_hours * 3600
    requirements = [r for r in (target.requirements, extra_requirements) if r.strip()]
    accounting_group = request.account or target.accounting_group
    lines = {
        "universe": "vanilla",
        "executable": "/bin/sh",
        "arguments": condor_arguments(["-c", LAUNCHER, "science-gateway-job", env_file, *command]),
        "transfer_executable": "False",
        "should_transfer_files": "NO",
        "getenv": "False",
        "initialdir": no_macros(one_line("workdir", workdir)),
        "output": one_line("output", output),
        "error": one_line("output", output),
        "batch_name": no_macros(one_line("job_name", job_name)),
        "request_cpus": str(int(request.cores)),
        "request_memory": str(int(request.memory_gb) * 1024),
        "request_disk": "1024",
        # the walltime: the schedd removes a job that has run longer
        "periodic_remove": f"(JobStatus == 2) && (time() - JobCurrentStartDate > {int(walltime)})",
        # a job that ended stays in the queue for a minute, so the spawn can say how it ended
        "leave_in_queue": "(JobStatus == 3 || JobStatus == 4) && (time() - EnteredCurrentStatus < 60)",
        "+GatewayJob": classad_string(job_name),
        "+GatewayName": classad_string(sanitize_comment(gateway)),
        "+GatewayUser": classad_string(sanitize_comment(identity)),
        "+GatewayPartition": classad_string(request.partition),
        "+GatewayWalltimeHours": str(int(request.walltime_hours)),
    }
    if request.gpus:
        lines["request_gpus"] = str(int(request.gpus))
    if requirements:
        lines["requirements"] = no_macros(" && ".join(f"({one_line('requirements', r)})" for r in requirements))
    if accounting_group:
        lines["accounting_group"] = one_line("accounting group", accounting_group)
        lines["accounting_group_user"] = one_line("unix user", unix_user)
    for name, expression in (extra_attributes or {}).items():
        if not _ATTR_NAME.fullmatch(name):
            raise ValueError(f"not a job attribute name: {name!r}")
        lines[f"+{name}"] = no_macros(one_line(f"attribute {name}", expression))
    text = "\n".join(f"{key} = {value}" for key, value in lines.items())
    return text + "\nqueue 1\n"


def job_constraint(job_name: str) -> str:
    """The one query's constraint: every job of this gateway (job name), any user."""
    return f"GatewayJob == {classad_string(job_name)}"


def parse_cluster_id(output: str) -> str:
    """The job id (``CLUSTER.0``) from ``condor_submit -terse`` (``CLUSTER.0 - CLUSTER.0``)."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    match = re.fullmatch(r"\s*(\d+)\.(\d+)\s*-\s*\d+\.\d+\s*", lines[-1]) if lines else None
    if not match:
        raise ValueError(f"condor_submit printed no job id: {output.strip()[-200:]!r}")
    return f"{match.group(1)}.{match.group(2)}"


def check_job_id(job_id: str) -> str:
    if not re.fullmatch(r"\d+\.\d+", job_id or ""):
        raise ValueError(f"not an HTCondor job id: {job_id!r}")
    return job_id


def build_rm_argv(condor_rm: str, prefix: list[str], job_id: str) -> list[str]:
    """``condor_rm`` of one job, run as its owner."""
    return [*prefix, condor_rm, check_job_id(job_id)]


def build_rm_workers_argv(condor_rm: str, prefix: list[str], job_name: str) -> list[str]:
    """``condor_rm`` of every job of the user (the one running it) whose GatewayJob is ``job_name``
    (a session's Dask workers)."""
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", job_name or ""):
        raise ValueError(f"not a worker job name: {job_name!r}")
    return [*prefix, condor_rm, "-constraint", job_constraint(job_name)]


def build_write_env_argv(prefix: list[str], path: str) -> list[str]:
    """Write stdin to ``path`` (mode 0600, the folder made first), as the user: a fixed script,
    the path as its argument (never part of the script)."""
    one_line("env file path", path)
    return [*prefix, "/bin/sh", "-c", 'umask 077 && mkdir -p -- "${1%/*}" && cat > "$1"', "science-gateway", path]


def _text(ad: dict, key: str) -> str:
    value = ad.get(key)
    return "" if value is None else str(value)


def host_of(remote_host: str) -> str:
    """``slot1_1@node.example`` -> ``node.example``."""
    return remote_host.rpartition("@")[2]


def parse_job_ad(ad: dict) -> JobInfo | None:
    """A job ad (dict-like, as the bindings return it) -> :class:`JobInfo`; None if it is not a job."""
    try:
        job_id = f"{int(ad['ClusterId'])}.{int(ad['ProcId'])}"
        status = int(ad["JobStatus"])
    except (KeyError, TypeError, ValueError):
        return None
    return JobInfo(
        job_id=job_id,
        status=status,
        owner=_text(ad, "Owner"),
        host=host_of(_text(ad, "RemoteHost")),
        hold_reason=_text(ad, "HoldReason"),
        idle_reason=_text(ad, "LastRejMatchReason"),
        partition=_text(ad, "GatewayPartition"),
        remove_reason=_text(ad, "RemoveReason"),
    )


def parse_job_ads(ads) -> dict[str, JobInfo]:
    jobs = {}
    for ad in ads:
        info = parse_job_ad(ad)
        if info is not None:
            jobs[info.job_id] = info
    return jobs
