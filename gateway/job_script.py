"""Pure builders for notebook batch jobs: the job script, the sbatch/squeue/scancel argv, parsers.

No I/O here: plain values in, plain values out, tested with plain asserts. The notebook's
parameters never reach the script or the argv: they are written to one JSON file per task
(``params-<task>.json``) that papermill reads. The script holds only paths the gateway
made (``shlex``-quoted) and the admin's prologue; every option is one argv element.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from .core.policy import ResourceRequest
from .core.text import format_walltime, sanitize_comment

#: squeue's fields for a run's tasks: id (``123`` or ``123_4``), state, reason
SQUEUE_FORMAT = "%i|%T|%r"
PENDING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED"}
RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}
#: a task squeue no longer lists, by its exit file: 0 COMPLETED, else FAILED; none: UNKNOWN
COMPLETED, FAILED, CANCELLED, UNKNOWN = "COMPLETED", "FAILED", "CANCELLED", "UNKNOWN"


def task_file(run_dir: str, kind: str, task: int | str) -> str:
    """``run_dir/<kind>-<task>.<ext>``: params-N.json, exit-N (papermill's exit code)."""
    return f"{run_dir}/params-{task}.json" if kind == "params" else f"{run_dir}/exit-{task}"


def build_job_script(*, python: str, notebook: str, output_prefix: str, run_dir: str, array: bool,
                     prologue=(), kernel_name: str = "", transport: str = "ipc") -> str:
    """The batch script of one run: papermill on the notebook, one task's parameters and output.

    ``output_prefix`` + ``<task>.ipynb`` is the executed notebook; papermill saves it after every
    cell, so its cells' ``papermill.status`` are the run's progress. The exit code goes to
    ``exit-<task>`` in ``run_dir`` (the state once squeue forgets the job). Papermill runs through
    :mod:`science_gateway.notebook_task` (its kernel on IPC sockets unless ``transport="tcp"``).
    """
    if transport not in ("ipc", "tcp"):
        raise ValueError(f"transport must be ipc or tcp, not {transport!r}")
    task = '"${SLURM_ARRAY_TASK_ID}"' if array else "0"
    q = shlex.quote
    argv = [q(python), "-m", "science_gateway.notebook_task", q(notebook), q(output_prefix) + task + ".ipynb",
            q(f"{run_dir}/params-") + task + ".json", f"--transport={transport}"]
    if kernel_name:
        argv.append(q(f"--kernel={kernel_name}"))
    lines = ["#!/bin/bash", "# Started by Science Gateway: a notebook run as a batch job (papermill).", "set -u"]
    lines += [line.rstrip("\n") for line in prologue if line.strip()]
    lines += [
        " ".join(argv),
        "status=$?",
        f"printf '%s\\n' \"$status\" > {q(run_dir + '/exit-')}{task}",
        'exit "$status"',
    ]
    return "\n".join(lines) + "\n"


def build_sbatch_argv(request: ResourceRequest, *, sbatch: str, job_name: str, comment: str, run_dir: str,
                      tasks: int | None, max_parallel: int = 0, export=()) -> list[str]:
    """``sbatch`` for one run (script on stdin): a job, or with ``tasks`` a job array of that many."""
    array = tasks is not None
    argv = [
        sbatch, "--parsable",
        f"--job-name={job_name}",
        f"--comment={sanitize_comment(comment)}",
        f"--partition={request.partition}",
        "--nodes=1", "--ntasks=1",
        f"--cpus-per-task={request.cores}",
        f"--mem={request.memory_gb}G",
        f"--time={format_walltime(request.walltime_hours * 60)}",
        f"--output={run_dir}/slurm-{'%A_%a' if array else '%j'}.out",
        f"--chdir={run_dir}",
        f"--export={','.join(sorted(export)) or 'NONE'}",
    ]
    if request.gpus:
        argv.append(f"--gres=gpu:{request.gpus}")
    if request.account:
        argv.append(f"--account={request.account}")
    if array:
        if tasks < 1:
            raise ValueError("a job array needs at least one task")
        argv.append(f"--array=0-{tasks - 1}" + (f"%{max_parallel}" if max_parallel else ""))
    return argv


def build_squeue_argv(squeue: str, job_id: str) -> list[str]:
    """One ``squeue`` for every task of a run (``--array``: one line per task, pending ones too)."""
    if not job_id.isdigit():
        raise ValueError(f"not a Slurm job id: {job_id!r}")
    return [squeue, "--noheader", "--array", f"--jobs={job_id}", "--states=all", f"--format={SQUEUE_FORMAT}"]


def build_scancel_argv(scancel: str, job_id: str) -> list[str]:
    if not job_id.isdigit():
        raise ValueError(f"not a Slurm job id: {job_id!r}")
    return [scancel, job_id]


def parse_sbatch_output(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    job_id = lines[-1].split(";")[0].strip() if lines else ""
    if not job_id.isdigit():
        raise ValueError(f"sbatch printed no job id: {output.strip()[-200:]!r}")
    return job_id


@dataclass(frozen=True)
class TaskState:
    task: int
    state: str
    reason: str = ""

    @property
    def done(self) -> bool:
        return self.state not in PENDING | RUNNING | {UNKNOWN}


def parse_squeue(output: str, job_id: str) -> dict[int, TaskState]:
    """``squeue`` in :data:`SQUEUE_FORMAT` -> task -> state (a plain job is task 0)."""
    found = {}
    for line in output.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 3:
            continue
        ident, state, reason = parts
        base, _, task = ident.partition("_")
        if base != job_id:
            continue
        if not task:
            found[0] = TaskState(0, state, reason)
        elif task.isdigit():
            found[int(task)] = TaskState(int(task), state, reason)
    return found


def task_state(listed: TaskState | None, exit_text: str | None, cancelled: bool, task: int) -> TaskState:
    """One task's state: squeue's while it lists the task, else the exit file's, else what the record knows."""
    if listed is not None and not (listed.state in PENDING | RUNNING and exit_text is not None):
        if listed.state.startswith("CANCELLED"):
            return TaskState(task, CANCELLED, listed.reason)
        return listed
    if exit_text is not None:
        code = exit_text.strip()
        if cancelled and code != "0":
            return TaskState(task, CANCELLED, f"papermill exited {code}")
        return TaskState(task, COMPLETED if code == "0" else FAILED, "" if code == "0" else f"papermill exited {code}")
    if cancelled:
        return TaskState(task, CANCELLED)
    return TaskState(task, UNKNOWN)


def run_state(states) -> str:
    """A run's state from its tasks': running while any runs, pending while any waits, then the worst end."""
    names = [s.state for s in states]
    if any(n in RUNNING for n in names):
        return "RUNNING"
    if any(n in PENDING for n in names):
        return "PENDING"
    if UNKNOWN in names:
        return UNKNOWN
    for end in (CANCELLED, FAILED):
        if any(n == end or n.startswith(end) for n in names):
            return end
    return COMPLETED if names and all(n == COMPLETED for n in names) else (names[0] if names else UNKNOWN)


def notebook_progress(text: str | None) -> tuple[int, int]:
    """``(executed, cells)`` of a notebook papermill is writing (its cells' ``papermill.status``).

    No file yet or a half-written one: ``(0, 0)``.
    """
    if not text:
        return 0, 0
    try:
        cells = json.loads(text).get("cells", [])
    except (ValueError, AttributeError):
        return 0, 0
    done = sum(1 for c in cells if (c.get("metadata", {}).get("papermill") or {}).get("status") == "completed")
    return done, len(cells)
