"""Pure builders for Slurm: the job script, the ``sbatch``/``squeue``/``scancel`` argv, parsers.

No I/O here: every function takes plain values and returns plain values, so the whole mapping from
a validated :class:`~science_gateway.core.policy.ResourceRequest` to what Slurm sees is tested with
plain asserts. Resource options travel in the ``sbatch`` argv (one argv element each, never through
a shell); the script only holds the admin's prologue and the server command, ``shlex``-quoted.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from ..core.policy import ResourceRequest
from ..core.text import format_walltime, sanitize_comment

#: squeue output fields, in order, separated by SQUEUE_SEP
SQUEUE_FIELDS = ("job_id", "state", "reason", "start_time", "host", "partition", "user", "name")
SQUEUE_FORMAT = "%i|%T|%r|%S|%B|%P|%u|%j"
SQUEUE_SEP = "|"

#: Slurm job states (long form) in which the job still holds or waits for resources
PENDING_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}


@dataclass(frozen=True)
class JobInfo:
    """One job as the last ``squeue`` saw it."""

    job_id: str
    state: str
    reason: str = ""
    start_time: str = ""
    host: str = ""
    partition: str = ""
    user: str = ""
    name: str = ""

    @property
    def pending(self) -> bool:
        return self.state in PENDING_STATES

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES

    @property
    def finished(self) -> bool:
        return not (self.pending or self.running)

    def describe(self) -> str:
        """What a user should read about this job (progress messages, errors)."""
        reason = "" if self.reason in ("", "None", "(null)") else self.reason
        if self.pending:
            text = f"Job {self.job_id} is queued in partition {self.partition or '?'}"
            text += f", waiting for {reason}" if reason else ""
            if self.start_time and self.start_time not in ("N/A", "Unknown", "None"):
                text += f"; estimated start {self.start_time.replace('T', ' ')}"
            return text
        if self.running:
            return f"Job {self.job_id} is running on {self.host}; waiting for Jupyter to answer"
        text = f"Job {self.job_id} ended: {self.state}"
        return text + (f" ({reason})" if reason else "")


#: pending reasons that mean the job's nodes are not available (drained, down, reserved, ...);
#: squeue prints some with spaces ("Nodes required for job are DOWN, DRAINED or ..."), scontrol
#: with underscores: they are compared with underscores as spaces
NODE_REASONS = (
    "ReqNodeNotAvail", "Nodes required for job are DOWN", "NodeDown", "PartitionDown", "PartitionInactive",
)

#: node state words (sinfo ``%T``) in which a node takes no new jobs
UNAVAILABLE_NODE_STATES = {
    "down", "drain", "drained", "draining", "fail", "failing", "maint", "inval", "future",
    "power_down", "powered_down", "powering_down", "reboot_issued", "reboot_requested",
}
#: sinfo's one-character state suffixes (``*`` not responding, ``~`` powered off, ...)
NODE_STATE_FLAGS = "*~#!%$@^-"


def waits_for_nodes(reason: str) -> bool:
    """Whether a pending ``reason`` says the job's nodes are unavailable (not merely busy)."""
    reason = reason.replace("_", " ")
    return any(reason.startswith(word) for word in NODE_REASONS)


@dataclass(frozen=True)
class NodeInfo:
    """One node of one partition as the last ``sinfo`` saw it."""

    name: str
    partition: str
    state: str
    reason: str = ""

    @property
    def available(self) -> bool:
        """Whether the node may take new jobs (busy counts as available: jobs wait, then run)."""
        if self.state.endswith("*"):
            return False  # not responding
        words = self.state.strip(NODE_STATE_FLAGS).lower().replace("+", " ").split()
        return bool(words) and not UNAVAILABLE_NODE_STATES.intersection(words)

    def describe(self) -> str:
        reason = "" if self.reason in ("", "none", "None", "(null)") else self.reason
        return f"node {self.name} is {self.state.strip(NODE_STATE_FLAGS)}" + (f" ({reason})" if reason else "")


def build_comment(identity: str, gateway: str) -> str:
    """``--comment``: who started the job, through which gateway."""
    return sanitize_comment(f"science-gateway={gateway} user={identity}")


def build_job_script(command: list[str], prologue: str = "") -> str:
    """The batch script: the admin's prologue, then ``exec`` of the quoted server command."""
    lines = ["#!/bin/bash", "# Started by Science Gateway: a Jupyter server for one user.", "set -eu"]
    if prologue.strip():
        lines += [prologue.rstrip("\n")]
    lines.append("exec " + shlex.join(command))
    return "\n".join(lines) + "\n"


def build_sbatch_argv(
    request: ResourceRequest,
    *,
    sbatch: str,
    prefix: list[str],
    job_name: str,
    comment: str,
    output: str,
    workdir: str,
    export: list[str],
    extra: list[str] = (),
) -> list[str]:
    """The full ``sbatch`` argv (run with the script on stdin): one element per option.

    ``prefix`` is the command that switches to the user (e.g. ``sudo -n -u NAME
    --preserve-env=NAMES``), already expanded. ``export`` names the environment variables the job receives (values travel in the
    environment, never in argv).
    """
    argv = [*prefix, sbatch, "--parsable"]
    argv += [
        f"--job-name={job_name}",
        f"--comment={sanitize_comment(comment)}",
        f"--partition={request.partition}",
        "--nodes=1",
        "--ntasks=1",
        f"--cpus-per-task={request.cores}",
        f"--mem={request.memory_gb}G",
        f"--time={format_walltime(request.walltime_hours * 60)}",
        f"--output={output}",
        f"--chdir={workdir}",
        f"--export={','.join(sorted(export))}",
    ]
    if request.gpus:
        argv.append(f"--gres=gpu:{request.gpus}")
    if request.account:
        argv.append(f"--account={request.account}")
    argv += list(extra)
    return argv


def build_squeue_argv(squeue: str, job_name: str) -> list[str]:
    """One ``squeue`` for every job of this gateway, in any state Slurm still remembers."""
    return [squeue, "--noheader", "--all", "--states=all", f"--name={job_name}", f"--format={SQUEUE_FORMAT}"]


#: sinfo output fields, in order, separated by SQUEUE_SEP
SINFO_FIELDS = ("name", "partition", "state", "reason")
SINFO_FORMAT = "%N|%P|%T|%E"


def build_sinfo_argv(sinfo: str, partitions) -> list[str]:
    """One ``sinfo`` for the nodes (one line per node and partition) of ``partitions``."""
    names = sorted(set(partitions))
    if not names or not all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name) for name in names):
        raise ValueError(f"not a list of Slurm partition names: {names!r}")
    return [sinfo, "--noheader", "--Node", f"--partition={','.join(names)}", f"--format={SINFO_FORMAT}"]


def parse_sinfo(output: str) -> dict[str, list[NodeInfo]]:
    """``sinfo`` output in :data:`SINFO_FORMAT` -> ``{partition: [NodeInfo, ...]}``; odd lines skipped.

    The default partition carries a ``*`` in sinfo's output; it is dropped here.
    """
    nodes: dict[str, list[NodeInfo]] = {}
    for line in output.splitlines():
        parts = line.strip().split(SQUEUE_SEP, len(SINFO_FIELDS) - 1)
        if len(parts) != len(SINFO_FIELDS) or not parts[0]:
            continue
        name, partition, state, reason = (part.strip() for part in parts)
        partition = partition.rstrip("*")
        nodes.setdefault(partition, []).append(NodeInfo(name, partition, state, reason))
    return nodes


def unavailable_nodes(nodes: list[NodeInfo]) -> str:
    """What to tell a user whose job waits on ``nodes`` when none of them takes jobs, else ``""``."""
    if not nodes or any(node.available for node in nodes):
        return ""
    return "; ".join(node.describe() for node in nodes)


def build_scancel_argv(scancel: str, prefix: list[str], job_id: str) -> list[str]:
    if not job_id.isdigit():
        raise ValueError(f"not a Slurm job id: {job_id!r}")
    return [*prefix, scancel, job_id]


def expand_prefix(prefix: list[str], username: str, env_names: list[str] = ()) -> list[str]:
    """Expand a command prefix (e.g. ``sudo -n -u {username} --preserve-env={env_names}``).

    An element equal to ``{username}`` becomes ``username``; an element containing
    ``{env_names}`` gets the comma-separated, sorted ``env_names`` (the names of the variables the
    command must receive; never their values) and is dropped when there are none.
    """
    names = ",".join(sorted(env_names))
    expanded = []
    for part in prefix:
        if part == "{username}":
            expanded.append(username)
        elif "{env_names}" in part:
            if names:
                expanded.append(part.replace("{env_names}", names))
        else:
            expanded.append(part)
    return expanded


def parse_sbatch_output(output: str) -> str:
    """The job id from ``sbatch --parsable`` (``ID`` or ``ID;cluster``, last line)."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    job_id = lines[-1].split(";")[0].strip() if lines else ""
    if not job_id.isdigit():
        raise ValueError(f"sbatch printed no job id: {output.strip()[-200:]!r}")
    return job_id


#: what Slurm's commands print when they never reached the controller (nothing was submitted)
CONTROLLER_UNREACHABLE = ("Unable to contact slurm controller (connect failure)",)


def controller_unreachable(stderr: str) -> bool:
    """Whether a failed command never reached the controller, so running it again is safe."""
    return any(text in stderr for text in CONTROLLER_UNREACHABLE)


def parse_squeue(output: str) -> dict[str, JobInfo]:
    """``squeue`` output in :data:`SQUEUE_FORMAT` -> ``{job_id: JobInfo}``; odd lines are skipped."""
    jobs = {}
    for line in output.splitlines():
        parts = line.strip().split(SQUEUE_SEP)
        if len(parts) != len(SQUEUE_FIELDS) or not parts[0].isdigit():
            continue
        info = JobInfo(**dict(zip(SQUEUE_FIELDS, parts)))
        jobs[info.job_id] = info
    return jobs


def build_cancel_workers_argv(scancel: str, prefix: list[str], job_name: str, username: str) -> list[str]:
    """``scancel`` of every job named ``job_name`` of ``username`` (a session's Dask workers)."""
    if not job_name or not username:
        raise ValueError("need a job name and a user to cancel worker jobs")
    return [*prefix, scancel, f"--name={job_name}", f"--user={username}"]
