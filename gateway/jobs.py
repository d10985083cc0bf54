"""Run a notebook as a batch job (papermill in a Slurm job, or a job array over inputs)::

    from science_gateway import jobs
    run = jobs.submit("analysis.ipynb", {"threshold": 0.5})                  # one job
    run = jobs.submit("analysis.ipynb", {"threshold": 0.5},
                      inputs=["demo:run2024.raw.0001", "demo:run2024.raw.0002"])  # one sbatch, a task per input
    run.status()          # {"state": "RUNNING", "tasks": [{"state": ..., "progress": 0.4, "output_path": ...}]}
    run.wait()            # until every task has ended
    run.cancel()
    run.output_paths      # the executed notebooks, relative to the Jupyter root: open them in JupyterLab

    jobs.pipelines()                                  # what the admins published for your groups
    jobs.launch("calibrate", "demo:run2024.raw.0001", threshold=0.7)
    jobs.runs()                                       # your runs, newest first

Each run is charged to your session's account (or another your groups may charge: ``account=``),
within your group policy (partition, cores, memory, walltime: the same ``ResourcePolicy`` as the
spawn form), and carries your identity in the job's ``--comment``, as your session does. The
parameters are checked before anything is submitted (:func:`~science_gateway.core.batch.check_parameters`)
and reach the notebook through a JSON file papermill reads, never through a shell.

A run's record is kept in ``~/.science-gateway/runs/<run-id>.json`` (``NotebookJobs.record_directory``):
see :class:`Run` and docs/batch.md for its fields.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import platform
import pwd
import re
import secrets
import sys
import time
from importlib import metadata

from .core.batch import ParameterError, UserBatchConfig, check_parameters, check_value
from .core.catalog import InvalidDID, parse_did
from .core.commands import CommandError, run_command
from .core.policy import PolicyError
from .core.presets import UserDaskConfig
from .core.text import quote_prefix, sanitize_comment
from .job_script import (
    TaskState,
    build_job_script,
    build_sbatch_argv,
    build_scancel_argv,
    build_squeue_argv,
    notebook_progress,
    parse_sbatch_output,
    parse_squeue,
    run_state,
    task_state,
)

__all__ = ["JobError", "ParameterError", "Run", "get", "launch", "pipelines", "runs", "submit"]

#: a run's states once every task has ended
FINAL = ("COMPLETED", "FAILED", "CANCELLED")
RUN_ID_RE = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")
#: what the job receives of the kernel's environment (names only; never the hub's API token)
EXPORT = ("HOME", "USER", "LOGNAME", "PATH", "LANG", "LC_ALL", "TZ", "SLURM_CONF")
#: package names and versions a run's record keeps (others are left out)
_PACKAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!-]{0,63}$")


class JobError(RuntimeError):
    """A run that could not be submitted, found or cancelled; the message says what to do."""


def _run(coro):
    """Run ``coro`` from plain code, also inside a kernel whose event loop is running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _home() -> str:
    # the account's home, not $HOME (batch jobs through sudo may carry another one)
    return pwd.getpwuid(os.getuid()).pw_dir


def _expand(path: str) -> str:
    return _home() + path[1:] if path.startswith("~") else path


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _environment() -> dict[str, str]:
    """The job's Python (the kernel's own) and its installed distributions, ``{name: version}``
    (``python`` included): the shape the gateway's provenance records use."""
    found = {"python": platform.python_version()}
    for dist in metadata.distributions():
        name, version = dist.metadata.get("Name"), dist.version
        if name and version and _PACKAGE_RE.fullmatch(name) and _VERSION_RE.fullmatch(version):
            found.setdefault(name.lower(), version)
    return dict(sorted(found.items()))


class Session:
    """What this user's session allows a run: policy, account, identity, site settings (from the hub)."""

    def __init__(self, environ=None):
        environ = os.environ if environ is None else environ
        self.environ = environ
        self.user = UserDaskConfig.from_environ(environ)
        self.batch = UserBatchConfig.from_environ(environ)
        self.settings = self.batch.settings
        self.groups = self.batch.groups or self.user.groups
        self.root = environ.get("SCIENCE_GATEWAY_JUPYTER_ROOT") or _home()

    def request(self, *, partition=None, cores=None, memory_gb=None, walltime_hours=None, gpus=None, account=None):
        """The job's resources, validated by the group policy (the spawn form's rules); the session's
        partition and account unless others are asked for."""
        if self.user.backend != "slurm" or self.batch.policy is None:
            raise JobError(
                "notebook batch jobs need a Slurm session of the gateway (this server has no batch policy "
                f"from the hub; backend {self.user.backend!r})"
            )
        options = {
            "partition": partition or self.environ.get("SLURM_JOB_PARTITION", ""),
            "cores": cores, "memory_gb": memory_gb, "walltime_hours": walltime_hours, "gpus": gpus,
            "account": self.user.account if account is None else account,
        }
        options = {k: v for k, v in options.items() if v is not None}
        if options.get("partition") and options["partition"] not in self.batch.policy.choices(self.groups).partitions:
            if partition is None:
                options.pop("partition")  # the session's partition is not one for batch jobs: the policy's default
        try:
            return self.batch.policy.validate(list(self.groups), options)
        except PolicyError as e:
            raise JobError(f"the run is not allowed: {e}") from None

    def comment(self, run_id: str) -> str:
        base = self.user.comment or f"science-gateway user={pwd.getpwuid(os.getuid()).pw_name}"
        return sanitize_comment(f"{base} notebook={run_id}")

    def relative(self, path: str) -> str:
        rel = os.path.relpath(path, self.root)
        return path if rel.startswith("..") else rel


def _notebook_path(notebook, root: str) -> str:
    if not isinstance(notebook, (str, os.PathLike)):
        raise JobError(f"notebook must be a path, not {quote_prefix(notebook)}")
    text = os.fspath(notebook)
    if not text.endswith(".ipynb") or len(text) > 1024 or any(ord(c) < 32 for c in text):
        raise JobError(f"notebook {quote_prefix(text)} must be the path of a .ipynb file")
    path = os.path.realpath(os.path.join(root, os.path.expanduser(text)))
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise JobError(f"no notebook {quote_prefix(text)} you can read (looked at {quote_prefix(path)})")
    return path


class Run:
    """One notebook run (a job, or a job array of one task per input) and its record.

    The record (``~/.science-gateway/runs/<id>.json``) holds: ``id``, ``created`` (UTC ISO),
    ``user``, ``notebook`` (absolute) and ``notebook_path`` (relative to the Jupyter root),
    ``pipeline`` (a name or null), ``parameters`` (common to all tasks), ``input_parameter`` and
    ``inputs`` (null for a single job), ``tasks`` (each: ``task``, ``parameters`` as the notebook
    got them, ``output`` absolute and ``output_path`` relative to the Jupyter root), ``job_id``,
    ``job_ids`` (``123`` or ``123_0``, ``123_1``, ...), ``array``, ``account``, ``partition``,
    ``cores``, ``memory_gb``, ``walltime_hours``, ``comment`` (the job's, with the identity),
    ``job_name``, ``run_dir``, ``python`` (the interpreter the job runs), ``environment`` (``{name: version}``
    of its distributions, ``python`` included), ``cancelled``,
    ``state`` (the last seen), ``ended`` (UTC ISO, once every task has ended) and ``final``
    (then: the last :meth:`status`, each task's state, progress and executed notebook).
    """

    def __init__(self, record: dict, session: Session, record_path: str):
        self.record = record
        self.session = session
        self.path = record_path

    def __repr__(self):
        return f"<Run {self.id} job {self.job_id} {self.record.get('state', '?')}>"

    @property
    def id(self) -> str:
        return self.record["id"]

    @property
    def job_id(self) -> str:
        return self.record["job_id"]

    @property
    def outputs(self) -> list[str]:
        return [t["output"] for t in self.record["tasks"]]

    @property
    def output_paths(self) -> list[str]:
        """The executed notebooks relative to the Jupyter root (what JupyterLab opens)."""
        return [t["output_path"] for t in self.record["tasks"]]

    def provenance(self, task: int | None = None) -> dict:
        """What :func:`science_gateway.catalog.publish` and ``export_crate`` take about this run,
        as keyword arguments: ``catalog.publish("fit", files, metadata, **run.provenance())``.

        The notebook, the parameters, the job ids and the environment the job ran with; the inputs
        that are dataset ids (``scope:name``). One task's executed notebook and parameters with
        ``task=i``; a single job's by default. For an array without ``task``, the common
        parameters and every task's job id (a crate or dataset of the whole array)."""
        tasks = self.record["tasks"]
        if task is None and len(tasks) == 1:
            task = 0
        if task is not None and not (isinstance(task, int) and 0 <= task < len(tasks)):
            raise JobError(f"this run has tasks 0 to {len(tasks) - 1}, not {quote_prefix(task)}")
        values = [tasks[task]["parameters"]] if task is not None else [t["parameters"] for t in tasks]
        inputs = []
        for given in values:
            for value in given.values():
                try:
                    parse_did(value)
                except (InvalidDID, TypeError):
                    continue
                if value not in inputs:
                    inputs.append(value)
        job_ids = self.record["job_ids"]
        return {
            "inputs": inputs,
            "notebook": self.record["notebook"],
            "executed_notebook": tasks[task]["output"] if task is not None else None,
            "parameters": dict(values[0] if task is not None else self.record["parameters"]),
            "jobs": [job_ids[task]] if task is not None else list(job_ids),
            "environment": dict(self.record.get("environment") or {}),
        }

    def save(self) -> None:
        tmp = f"{self.path}.{secrets.token_hex(3)}.tmp"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            json.dump(self.record, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path)

    async def status_async(self) -> dict:
        """The run's state and each task's, with progress (one squeue for all tasks)."""
        if self.record.get("final"):
            return self.record["final"]  # every task has ended: nothing more to ask Slurm
        settings = self.session.settings
        listed = {}
        try:
            result = await run_command(build_squeue_argv(settings.query_command, self.job_id), check=False,
                                       timeout=settings.command_timeout)
            listed = parse_squeue(result.stdout, self.job_id)
        except CommandError:
            pass  # squeue could not run: the exit files still tell ended tasks
        tasks = []
        for entry in self.record["tasks"]:
            index = entry["task"]
            exit_text = _read(f"{self.record['run_dir']}/exit-{index}")
            state = task_state(listed.get(index), exit_text, self.record.get("cancelled", False), index)
            done, cells = notebook_progress(_read(entry["output"]))
            tasks.append({
                "task": index, "state": state.state, "reason": state.reason,
                "progress": round(done / cells, 3) if cells else 0.0, "cells_done": done, "cells": cells,
                "output_path": entry["output_path"], "parameters": entry["parameters"],
            })
        overall = run_state([TaskState(t["task"], t["state"]) for t in tasks])
        done = sum(t["progress"] for t in tasks)
        status = {"id": self.id, "job_id": self.job_id, "state": overall,
                  "progress": round(done / len(tasks), 3) if tasks else 0.0, "tasks": tasks}
        if overall != self.record.get("state") or overall in FINAL:
            self.record["state"] = overall
            if overall in FINAL:
                self.record["ended"] = _utcnow().isoformat()
                self.record["final"] = status
            self.save()
        return status

    def status(self) -> dict:
        return _run(self.status_async())

    async def cancel_async(self) -> None:
        settings = self.session.settings
        try:
            await run_command(build_scancel_argv(settings.cancel_command, self.job_id), timeout=settings.command_timeout)
        except CommandError as e:
            raise JobError(f"scancel refused to cancel job {self.job_id}: {e.stderr.strip()[-300:]}") from None
        self.record["cancelled"] = True
        self.save()

    def cancel(self) -> None:
        """Cancel every task of the run (one scancel)."""
        _run(self.cancel_async())

    async def wait_async(self, timeout: float = 3600, interval: float = 3) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            status = await self.status_async()
            if status["state"] in FINAL:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {self.id} is still {status['state']} after {timeout:g} s")
            await asyncio.sleep(interval)

    def wait(self, timeout: float = 3600, interval: float = 3) -> dict:
        """Until every task has ended (or ``timeout`` seconds): the last :meth:`status`."""
        return _run(self.wait_async(timeout, interval))


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _records_dir(session: Session) -> str:
    path = _expand(session.settings.record_directory)
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


async def submit_async(notebook, parameters=None, *, inputs=None, input_parameter: str = "dataset",
                       partition=None, cores=None, memory_gb=None, walltime_hours=None, gpus=None, account=None,
                       pipeline: str | None = None, environ=None) -> Run:
    """:func:`submit` for code already in an event loop."""
    session = Session(environ)
    settings = session.settings
    common = check_parameters(parameters)
    if inputs is not None:
        if not isinstance(inputs, (list, tuple)) or not inputs:
            raise ParameterError(f"inputs must be a non-empty list (one task each), not {quote_prefix(inputs)}")
        if len(inputs) > settings.max_array_tasks:
            raise ParameterError(f"{len(inputs)} inputs; one run takes at most {settings.max_array_tasks}")
        check_parameters({input_parameter: None})
        if input_parameter in common:
            raise ParameterError(f"{input_parameter!r} is both a parameter and the inputs' name: give it once")
        tasks = [{**common, input_parameter: check_value(input_parameter, value)} for value in inputs]
    else:
        tasks = [common]
    request = session.request(partition=partition, cores=cores, memory_gb=memory_gb, walltime_hours=walltime_hours,
                              gpus=gpus, account=account)
    notebook_path = _notebook_path(notebook, session.root)

    run_id = f"{_utcnow():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
    run_dir = os.path.join(_expand(settings.output_directory), run_id)
    os.makedirs(run_dir, mode=0o700)
    stem = os.path.basename(notebook_path)[: -len(".ipynb")]
    output_prefix = f"{run_dir}/{stem}-"
    for index, values in enumerate(tasks):
        with open(os.open(f"{run_dir}/params-{index}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            json.dump(values, f)
    array = inputs is not None
    script = build_job_script(python=sys.executable, notebook=notebook_path, output_prefix=output_prefix,
                              run_dir=run_dir, array=array, prologue=settings.job_script_prologue,
                              kernel_name=settings.kernel_name, transport=settings.kernel_transport)
    comment = session.comment(run_id)
    argv = build_sbatch_argv(request, sbatch=settings.submit_command, job_name=settings.job_name, comment=comment,
                             run_dir=run_dir, tasks=len(tasks) if array else None,
                             max_parallel=settings.max_parallel_tasks,
                             export=[name for name in EXPORT if name in os.environ])
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "/usr/bin:/bin")])
    try:
        out = await run_command(argv, input=script, env=env, timeout=settings.command_timeout)
        job_id = parse_sbatch_output(out.stdout)
    except (CommandError, ValueError) as e:
        raise JobError(f"Slurm refused the run: {(getattr(e, 'stderr', '') or str(e)).strip()[-300:]}") from None
    record = {
        "id": run_id, "created": _utcnow().isoformat(), "user": pwd.getpwuid(os.getuid()).pw_name,
        "notebook": notebook_path, "notebook_path": session.relative(notebook_path), "pipeline": pipeline,
        "parameters": common, "input_parameter": input_parameter if array else None,
        "inputs": list(inputs) if array else None,
        "tasks": [
            {"task": i, "parameters": values, "output": f"{output_prefix}{i}.ipynb",
             "output_path": session.relative(f"{output_prefix}{i}.ipynb")}
            for i, values in enumerate(tasks)
        ],
        "job_id": job_id, "job_ids": [f"{job_id}_{i}" for i in range(len(tasks))] if array else [job_id],
        "array": array, "account": request.account, "partition": request.partition, "cores": request.cores,
        "memory_gb": request.memory_gb, "walltime_hours": request.walltime_hours, "comment": comment,
        "job_name": settings.job_name, "run_dir": run_dir, "python": sys.executable, "environment": _environment(),
        "cancelled": False, "state": "PENDING", "ended": None,
    }
    run = Run(record, session, os.path.join(_records_dir(session), f"{run_id}.json"))
    run.save()
    return run


def submit(notebook, parameters=None, *, inputs=None, input_parameter: str = "dataset", partition=None, cores=None,
           memory_gb=None, walltime_hours=None, gpus=None, account=None, environ=None) -> Run:
    """Run ``notebook`` (a path, relative to the Jupyter root or absolute) with ``parameters``.

    With ``inputs`` (a list) the run is one job array of one task per input, each task getting
    ``{input_parameter: input}`` besides ``parameters``: one ``sbatch`` for all. Resources default
    to the policy's defaults on your session's partition; ``account`` to your session's.
    Bad parameters raise :class:`ParameterError`, resources beyond policy :class:`JobError`,
    before anything is submitted.
    """
    return _run(submit_async(notebook, parameters, inputs=inputs, input_parameter=input_parameter,
                             partition=partition, cores=cores, memory_gb=memory_gb, walltime_hours=walltime_hours,
                             gpus=gpus, account=account, environ=environ))


def pipelines(environ=None) -> dict:
    """The pipelines your groups may launch: name -> description and declared parameters."""
    batch = Session(environ).batch
    return {
        name: {"description": p.description, "dataset_parameter": p.dataset_parameter,
               "parameters": p.as_dict()["parameters"]}
        for name, p in sorted(batch.pipelines.items())
    }


async def launch_async(name: str, dataset=None, *, datasets=None, account=None, environ=None, **parameters) -> Run:
    session = Session(environ)
    pipeline = session.batch.pipeline(name)
    if datasets is not None:
        if dataset is not None:
            raise ParameterError("give dataset or datasets, not both")
        if not isinstance(datasets, (list, tuple)) or not datasets:
            raise ParameterError(f"datasets must be a non-empty list, not {quote_prefix(datasets)}")
        resolved = [pipeline.resolve(name, d, parameters) for d in datasets]
        common = {k: v for k, v in resolved[0].items() if k != pipeline.dataset_parameter}
        inputs = [r[pipeline.dataset_parameter] for r in resolved]
    else:
        common, inputs = pipeline.resolve(name, dataset, parameters), None
    return await submit_async(pipeline.notebook, common, inputs=inputs, input_parameter=pipeline.dataset_parameter,
                              cores=pipeline.cores, memory_gb=pipeline.memory_gb,
                              walltime_hours=pipeline.walltime_hours, account=account, pipeline=name, environ=environ)


def launch(name: str, dataset=None, *, datasets=None, account=None, environ=None, **parameters) -> Run:
    """Launch the admin's pipeline ``name`` on ``dataset`` (or one array task per entry of ``datasets``)."""
    return _run(launch_async(name, dataset, datasets=datasets, account=account, environ=environ, **parameters))


def get(run_id: str, environ=None) -> Run:
    """Your run ``run_id`` (from its record)."""
    if not isinstance(run_id, str) or not RUN_ID_RE.fullmatch(run_id):
        raise JobError(f"run id {quote_prefix(run_id)} is not one the gateway makes (YYYYMMDD-HHMMSS-xxxxxx)")
    session = Session(environ)
    path = os.path.join(_expand(session.settings.record_directory), f"{run_id}.json")
    text = _read(path)
    if text is None:
        raise JobError(f"no run {run_id!r} of yours; jobs.runs() lists them")
    return Run(json.loads(text), session, path)


def runs(environ=None) -> list[Run]:
    """Your runs, newest first."""
    session = Session(environ)
    folder = _expand(session.settings.record_directory)
    try:
        names = sorted((n for n in os.listdir(folder) if RUN_ID_RE.fullmatch(n[:-5]) and n.endswith(".json")),
                       reverse=True)
    except OSError:
        return []
    found = []
    for name in names:
        text = _read(os.path.join(folder, name))
        if text:
            found.append(Run(json.loads(text), session, os.path.join(folder, name)))
    return found
