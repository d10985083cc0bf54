"""Notebooks as batch jobs: the admin's pipelines, the site settings, and parameter checks (pure).

An admin publishes a notebook as a **pipeline** in the hub's config::

    NotebookJobs:
      pipelines:
        calibrate:
          description: "Calibrate one raw dataset"
          notebook: /opt/pipelines/calibrate.ipynb
          groups: [astro]
          dataset_parameter: dataset
          parameters:
            dataset:   {type: dataset, required: true, description: "the raw dataset (scope:name)"}
            threshold: {type: float, default: 0.5}

Each dict becomes a typed :class:`Pipeline` (its parameters :class:`PipelineParameter`); a typo
fails at hub start-up with the key named. The Slurm spawner resolves, per user, which pipelines
their groups may launch and the group policy that bounds their jobs, and hands both to the user's
server in :data:`ENV_VAR` (JSON, :func:`batch_environment`); the session's account and identity
travel with the Dask view (:data:`science_gateway.core.presets.ENV_VAR`), read back once
(``UserDaskConfig``). The kernel validates each run with the same :class:`ResourcePolicy`.

:func:`check_parameters` is the one check of what a user passes to a notebook: names that are
Python identifiers, values of JSON's plain types, one line of printable text, bounded in size.
Nothing here does I/O or imports anything of ours beyond the core.
"""

from __future__ import annotations

import json
import keyword
import math
import re
from dataclasses import dataclass, field

from traitlets import Any, Bool, Dict, Enum, HasTraits, Integer, List, Unicode, validate
from traitlets.config import LoggingConfigurable

from .catalog import parse_did
from .names import check_name
from .policy import ResourcePolicy
from .text import quote_prefix
from .typed import build_typed

#: the environment variable carrying a user's pipelines, job policy and site settings (JSON)
ENV_VAR = "SCIENCE_GATEWAY_BATCH"

#: parameter names: Python identifiers (papermill assigns them in a cell), no dunder names
PARAMETER_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
#: the longest text value, the most items of a list/dict, the deepest nesting, the most parameters
MAX_TEXT = 4096
MAX_ITEMS = 1000
MAX_DEPTH = 4
MAX_PARAMETERS = 64
#: printable text only: no control characters (newlines, escapes, NUL)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

PARAMETER_TYPES = ("str", "int", "float", "bool", "dataset")


class ParameterError(ValueError):
    """A parameter (name or value) refused before anything is submitted; the message says why."""


def check_parameter_name(name) -> str:
    if not isinstance(name, str) or not PARAMETER_NAME_RE.fullmatch(name) or keyword.iskeyword(name) \
            or name.startswith("__"):
        raise ParameterError(
            f"parameter name {quote_prefix(name)} is refused: names are Python identifiers "
            "(letters, digits, '_', not starting with a digit or '__', at most 64 characters)"
        )
    return name


def check_value(name: str, value, depth: int = 0):
    """``value`` if it is a plain JSON value a notebook may receive, else :class:`ParameterError`."""
    if depth > MAX_DEPTH:
        raise ParameterError(f"parameter {name!r} is nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) >= 2**63:
            raise ParameterError(f"parameter {name!r}: {quote_prefix(value)} is out of range (64-bit integers)")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ParameterError(f"parameter {name!r}: {quote_prefix(value)} is not a finite number")
        return value
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise ParameterError(
                f"parameter {name!r}: the text {quote_prefix(value)} is {len(value)} characters long; at most {MAX_TEXT}"
            )
        if _CONTROL.search(value):
            raise ParameterError(
                f"parameter {name!r}: the text {quote_prefix(value)} holds a control character (a newline, tab, "
                "escape, ...); values are one line of printable text"
            )
        return value
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_ITEMS:
            raise ParameterError(f"parameter {name!r} has {len(value)} items; at most {MAX_ITEMS}")
        return [check_value(name, item, depth + 1) for item in value]
    if isinstance(value, dict):
        if len(value) > MAX_ITEMS:
            raise ParameterError(f"parameter {name!r} has {len(value)} keys; at most {MAX_ITEMS}")
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ParameterError(f"parameter {name!r}: key {quote_prefix(key)} is not text")
            out[check_value(name, key, depth + 1)] = check_value(name, item, depth + 1)
        return out
    raise ParameterError(
        f"parameter {name!r} is {quote_prefix(value)}: values are text, numbers, true/false, null, "
        "or lists and dicts of those"
    )


def check_parameters(parameters) -> dict:
    """The checked parameters of one notebook run (a new dict), or :class:`ParameterError`."""
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise ParameterError(f"parameters must be a dict of name -> value, not {type(parameters).__name__}")
    if len(parameters) > MAX_PARAMETERS:
        raise ParameterError(f"{len(parameters)} parameters; at most {MAX_PARAMETERS}")
    return {check_parameter_name(name): check_value(name, value) for name, value in parameters.items()}


class PipelineParameter(HasTraits):
    """One declared parameter of a pipeline (one entry of ``Pipeline.parameters``)."""

    type = Enum(
        PARAMETER_TYPES,
        "str",
        help="""What the value is: ``str`` (one line of text), ``int``, ``float``, ``bool``, or
        ``dataset`` (a catalogue dataset id ``scope:name``).""",
    )
    default = Any(None, allow_none=True, help="The value when the user gives none (checked like a user's value).")
    required = Bool(False, help="Whether the user must give a value (a default is then not used).")
    description = Unicode("", help="What users read beside the field.")

    def coerce(self, name: str, value):
        """``value`` as this parameter's type (text from a form converts), or :class:`ParameterError`."""
        kind = self.type
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
                return value.strip().lower() in ("true", "yes", "1")
        elif kind == "int":
            if isinstance(value, int) and not isinstance(value, bool):
                return check_value(name, value)
            if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,18}", value.strip()):
                return int(value.strip())
        elif kind == "float":
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return check_value(name, float(value))
            if isinstance(value, str):
                try:
                    return check_value(name, float(value.strip()))
                except ValueError:
                    pass
        elif kind == "dataset":
            if isinstance(value, str):
                try:
                    parse_did(value.strip())
                except ValueError as e:
                    raise ParameterError(f"parameter {name!r}: {e}") from None
                return value.strip()
        elif isinstance(value, str):
            return check_value(name, value)
        raise ParameterError(f"parameter {name!r} must be {kind}, got {quote_prefix(value)}")


class Pipeline(HasTraits):
    """A notebook an admin published for users of some groups (one entry of ``NotebookJobs.pipelines``)."""

    description = Unicode("", help="What users read in the pipeline list.")
    notebook = Unicode(help="Absolute path of the notebook, readable by the users on every node (e.g. /opt/pipelines/x.ipynb).")
    groups = List(Unicode(), help="Groups whose members see and may launch it; empty: every group the policy allows jobs.")
    parameters = Dict(help="Parameter name -> declared parameter (a dict with PipelineParameter's keys: type, default, required, description).")
    dataset_parameter = Unicode(
        "dataset", help="The parameter that receives the dataset the user picks (declared in parameters, type dataset or str)."
    )
    cores = Integer(1, min=1, help="CPU cores of each job of this pipeline (within the user's policy).")
    memory_gb = Integer(2, min=1, help="Memory (GiB) of each job of this pipeline (within the user's policy).")
    walltime_hours = Integer(1, min=1, help="Walltime (hours) of each job of this pipeline (within the user's policy).")

    @validate("notebook")
    def _check_notebook(self, proposal):
        path = proposal.value
        if not path.startswith("/") or not path.endswith(".ipynb") or "/../" in path or _CONTROL.search(path):
            raise ValueError(f"notebook {quote_prefix(path)} must be an absolute path of a .ipynb file")
        return path

    @validate("parameters")
    def _build_parameters(self, proposal):
        return {
            check_parameter_name(name): build_typed(PipelineParameter, value, f"parameter {name!r}")
            for name, value in proposal.value.items()
        }

    def resolve(self, name: str, dataset, given: dict | None) -> dict:
        """The parameters of one launch: declared ones only, typed, defaults filled, the dataset set."""
        given = dict(given or {})
        if self.dataset_parameter in given:
            raise ParameterError(f"the dataset goes in its own field, not in parameters[{self.dataset_parameter!r}]")
        if dataset is not None:
            given[self.dataset_parameter] = dataset
        unknown = sorted(set(given) - set(self.parameters))
        if unknown:
            raise ParameterError(
                f"pipeline {name!r} has no parameter {quote_prefix(unknown[0])}; its parameters: "
                f"{', '.join(sorted(self.parameters)) or 'none'}"
            )
        values = {}
        for pname, declared in self.parameters.items():
            if pname in given:
                values[pname] = declared.coerce(pname, given[pname])
            elif declared.required:
                raise ParameterError(f"pipeline {name!r} needs a value for {pname!r} ({declared.type})")
            elif declared.default is not None:
                values[pname] = declared.coerce(pname, declared.default)
        return check_parameters(values)

    def as_dict(self) -> dict:
        out = {name: getattr(self, name) for name in sorted(self.trait_names()) if name != "parameters"}
        out["parameters"] = {
            name: {key: getattr(p, key) for key in ("type", "default", "required", "description")}
            for name, p in self.parameters.items()
        }
        return out


def build_pipeline(name: str, value) -> Pipeline:
    check_name("pipeline", name)
    pipeline = build_typed(Pipeline, value, f"pipeline {name!r}")
    if not pipeline.notebook:
        raise ValueError(f"pipeline {name!r}: notebook is required (an absolute path of a .ipynb file)")
    if pipeline.dataset_parameter not in pipeline.parameters:
        raise ValueError(f"pipeline {name!r}: dataset_parameter {pipeline.dataset_parameter!r} is not in its parameters")
    return pipeline


class NotebookJobs(LoggingConfigurable):
    """Notebooks run as batch jobs (papermill in a Slurm job or job array): pipelines and site settings."""

    pipelines = Dict(
        help="""
        Pipeline name -> pipeline (a dict with Pipeline's keys)::

            {"calibrate": {"description": "Calibrate one raw dataset",
                           "notebook": "/opt/pipelines/calibrate.ipynb", "groups": ["astro"],
                           "dataset_parameter": "dataset",
                           "parameters": {"dataset": {"type": "dataset", "required": True},
                                          "threshold": {"type": "float", "default": 0.5}},
                           "cores": 1, "memory_gb": 2, "walltime_hours": 1}}

        Keys: description, notebook (an absolute path users can read on every node), groups
        (who sees it; empty: every group with a partition in ResourcePolicy), parameters (name ->
        {type: str|int|float|bool|dataset, default, required, description}), dataset_parameter
        (the parameter that gets the dataset the user picks), cores, memory_gb, walltime_hours
        (checked against the user's ResourcePolicy at launch). Users see the list and launch a
        pipeline on a dataset without opening the notebook.
        """,
    ).tag(config=True)

    @validate("pipelines")
    def _build_pipelines(self, proposal):
        return {name: build_pipeline(name, value) for name, value in proposal.value.items()}

    job_name = Unicode(
        "science-gateway-notebook",
        help="""Job name of every notebook job (not tied to the session: a run outlives the server
        that started it).""",
    ).tag(config=True)
    submit_command = Unicode("sbatch", help="The sbatch command the kernel runs (a name on PATH or an absolute path).").tag(
        config=True
    )
    cancel_command = Unicode("scancel", help="The scancel command the kernel runs to cancel a run.").tag(config=True)
    query_command = Unicode(
        "squeue", help="The squeue command the kernel runs for a run's state (one call per look, for all its tasks)."
    ).tag(config=True)
    command_timeout = Integer(60, min=1, help="Seconds before sbatch, squeue or scancel is killed and the call fails.").tag(
        config=True
    )
    max_array_tasks = Integer(
        1000, min=1, help="Most inputs (array tasks) one run may have; one sbatch submits them all."
    ).tag(config=True)
    max_parallel_tasks = Integer(
        0, min=0, help="Most array tasks of one run running at once (sbatch --array=...%N); 0: no limit of ours."
    ).tag(config=True)
    output_directory = Unicode(
        "~/batch-runs",
        help="""Where each run's executed notebooks go, one folder per run (`~` is the user's home).
        Keep it under the users' Jupyter root (their home) so JupyterLab can open them.""",
    ).tag(config=True)
    record_directory = Unicode(
        "~/.science-gateway/runs",
        help="""Where each run's record (``<run-id>.json``: notebook, parameters, job ids, account,
        environment) is kept (`~` is the user's home), for listing runs and for what publishes them.""",
    ).tag(config=True)
    job_script_prologue = List(
        Unicode(), help="Shell lines run in each notebook job before papermill (e.g. `module load ...`); admin-written only."
    ).tag(config=True)
    kernel_name = Unicode(
        "", help="The Jupyter kernel papermill runs each notebook with; empty: the one the notebook names."
    ).tag(config=True)
    kernel_transport = Enum(
        ["ipc", "tcp"],
        "ipc",
        help="""How papermill talks to each job's kernel: ``ipc``, sockets in a private folder of the
        task's own on the node (many array tasks can start at once on one node); ``tcp``, loopback
        ports picked by Jupyter (they can collide when many kernels start at once on one node).""",
    ).tag(config=True)

    #: site settings that travel to the kernel with the pipelines
    SITE_SETTINGS = (
        "job_name", "submit_command", "cancel_command", "query_command", "command_timeout", "max_array_tasks",
        "max_parallel_tasks", "output_directory", "record_directory", "job_script_prologue", "kernel_name",
        "kernel_transport",
    )

    def site_settings(self) -> dict:
        return {name: getattr(self, name) for name in self.SITE_SETTINGS}

    def allowed(self, groups, partitions=None) -> dict[str, Pipeline]:
        """The pipelines a member of ``groups`` sees (``partitions``: the policy's, None: any)."""
        groups = set(groups)
        if partitions is not None and not partitions:
            return {}
        return {name: p for name, p in self.pipelines.items() if not p.groups or groups & set(p.groups)}

    def user_view(self, *, groups, policy: ResourcePolicy | None) -> dict:
        """What one user's server learns (JSON-ready): their pipelines, the policy of their groups, the site."""
        groups = sorted(set(groups))
        own = {} if policy is None else {g: policy.groups[g] for g in groups if g in policy.groups}
        choices = None if policy is None else policy.choices(groups)
        return {
            "groups": groups,
            "policy": {
                g: {"partitions": {n: lim.as_dict() for n, lim in gp.partitions.items()}, "accounts": list(gp.accounts),
                    "max_dask_workers": gp.max_dask_workers}
                for g, gp in own.items()
            },
            "site": self.site_settings(),
            "pipelines": {
                name: p.as_dict()
                for name, p in self.allowed(groups, None if choices is None else choices.partitions).items()
            },
        }


def batch_environment(jobs: NotebookJobs, *, groups, policy: ResourcePolicy | None) -> dict[str, str]:
    """The environment variable for one user's server (pure: the caller supplies groups and policy)."""
    return {ENV_VAR: json.dumps(jobs.user_view(groups=groups, policy=policy), sort_keys=True)}


@dataclass(frozen=True)
class UserBatchConfig:
    """One user's pipelines, job policy and site settings, as the hub resolved them (in the kernel)."""

    groups: tuple[str, ...] = ()
    policy: ResourcePolicy | None = None
    settings: NotebookJobs = field(default_factory=NotebookJobs)
    pipelines: dict = field(default_factory=dict)

    @classmethod
    def from_view(cls, view: dict) -> UserBatchConfig:
        settings = NotebookJobs(pipelines=view.get("pipelines", {}), **view.get("site", {}))
        return cls(
            groups=tuple(view.get("groups", ())),
            policy=ResourcePolicy(groups=view.get("policy", {})),
            settings=settings,
            pipelines=dict(settings.pipelines),
        )

    @classmethod
    def from_environ(cls, environ) -> UserBatchConfig:
        """From :data:`ENV_VAR`; without it (not a Slurm session) no policy: jobs are refused."""
        raw = environ.get(ENV_VAR)
        if not raw:
            return cls()
        return cls.from_view(json.loads(raw))

    def pipeline(self, name: str) -> Pipeline:
        if name in self.pipelines:
            return self.pipelines[name]
        raise ParameterError(
            f"no pipeline {quote_prefix(name)} for you; pipelines you may launch: {', '.join(sorted(self.pipelines)) or 'none'}"
        )
