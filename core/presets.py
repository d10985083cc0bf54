"""Dask presets: what a gateway admin defines, and what one user may use.

An admin writes the presets once, in the hub's config::

    DaskPresets:
      presets:
        small:  {description: "up to 8 workers, 1 core and 2 GB each, 1 h",
                 partition: cpu, cores: 1, memory_gb: 2, walltime_minutes: 60,
                 workers_per_job: 4, max_workers: 8}
        medium: {partition: cpu, cores: 2, memory_gb: 4, walltime_minutes: 240, max_workers: 16,
                 groups: [astro]}

Each dict becomes a typed :class:`DaskPreset` (a ``@validate`` names the offending key of a typo).
How many workers a user may run comes from the group policy
(``ResourcePolicy.groups[...].max_dask_workers``): the hub resolves, per user, which presets they
may use and with how many workers (:meth:`DaskPresets.user_view`), and hands the result to the
user's server in the environment variable :data:`ENV_VAR` (JSON). The kernel reads it back
(:func:`UserDaskConfig.from_environ`); nothing in the kernel re-implements the policy.

This module has no Dask import: the hub imports it. :func:`dask_environment` is what a spawner
hands a server; :func:`worker_job_name` names a session's worker jobs for the kernel (which submits
them) and the spawner (which cancels them when the session ends).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from traitlets import Bool, Dict, Enum, HasTraits, Integer, List, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from .names import check_name
from .typed import build_typed

#: the environment variable carrying a user's resolved presets (JSON) into their server and kernels
ENV_VAR = "SCIENCE_GATEWAY_DASK"
#: Dask's config for the dashboard link, as an environment variable (read when dask is imported)
DASHBOARD_LINK_ENV = "DASK_DISTRIBUTED__DASHBOARD__LINK"
#: the dashboard through the user's server (jupyter-server-proxy): works behind the hub's proxy
DASHBOARD_LINK = "{JUPYTERHUB_SERVICE_PREFIX}proxy/{port}/status"
BACKENDS = ("slurm", "condor", "local")

_DIRECTIVE_RE = re.compile(r"^--[a-z][a-z0-9-]*(=[A-Za-z0-9@._:,/+=-]*)?$")


class DaskPresetError(ValueError):
    """A preset the user may not use (or that does not exist); the message lists what they may use."""


class DaskPreset(HasTraits):
    """One admin-defined kind of Dask cluster (one entry of ``DaskPresets.presets``).

    Sizes are per worker, as users think of them; ``workers_per_job`` workers share one batch job
    (fewer ``sbatch`` calls, faster scale-up).
    """

    description = Unicode("", help="What users read in the preset list, e.g. 'up to 8 workers, 1 core, 2 GB'.")
    partition = Unicode("", help="Slurm partition of the worker jobs; empty: the cluster's default partition.")
    cores = Integer(1, min=1, help="CPU cores (threads) per worker.")
    memory_gb = Integer(2, min=1, help="Memory (GiB) per worker.")
    workers_per_job = Integer(
        1, min=1, help="Workers started by one sbatch call (see job_layout): fewer sbatch calls, faster scale-up."
    )
    job_layout = Enum(
        ["array", "processes"],
        "array",
        help="""How ``workers_per_job`` workers share one sbatch call: ``array``, a job array with
        one task (``cores``, ``memory_gb``) per worker, each scheduled on its own, so it fits
        wherever one worker fits; ``processes``, one job with all their cores and memory, the
        workers as processes of one ``dask worker --nworkers``.""",
    )
    nanny = Bool(
        False,
        help="""Run each worker under a nanny process (restarts a crashed worker; one more Python
        process per worker, so slower to start). Always on for the ``processes`` layout with
        several workers per job (Dask needs it there).""",
    )
    walltime_minutes = Integer(60, min=5, help="Walltime of each worker job, in minutes.")
    account = Unicode(
        "", help="Account charged when the user's session has none; a session's own account always wins."
    )
    extra_directives = List(
        Unicode(), help="Extra sbatch options for the worker jobs, each one `--name=value` (e.g. `--qos=dask`)."
    )
    max_workers = Integer(8, min=1, help="Most workers one cluster of this preset may have (the group policy may allow fewer).")
    groups = List(
        Unicode(), help="Groups whose members may use this preset; empty: every group the policy allows Dask workers."
    )

    @validate("partition", "account")
    def _check_name(self, proposal):
        return check_name(proposal.trait.name, proposal.value) if proposal.value else proposal.value

    @validate("extra_directives")
    def _check_directives(self, proposal):
        for item in proposal.value:
            if not _DIRECTIVE_RE.fullmatch(item):
                raise ValueError(f"extra directive {item!r} must look like --name=value (one option, no spaces)")
        return list(proposal.value)

    def job_cores(self) -> int:
        return self.cores * self.workers_per_job

    def job_memory_gb(self) -> int:
        return self.memory_gb * self.workers_per_job

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in sorted(self.trait_names())}


def build_preset(name: str, value) -> DaskPreset:
    """One preset from what the admin wrote (a dict) or from a DaskPreset."""
    check_name("Dask preset", name)
    return build_typed(DaskPreset, value, f"Dask preset {name!r}")


def worker_lifetime(walltime_minutes: int, margin_minutes: int) -> tuple[int, int]:
    """``(lifetime, stagger)`` in minutes so every worker retires before the job's walltime.

    A worker retires after ``lifetime ± stagger``; its last possible end,
    ``lifetime + stagger``, stays ``margin_minutes`` before the walltime.
    """
    stagger = max(1, walltime_minutes // 20)
    lifetime = walltime_minutes - margin_minutes - stagger
    if lifetime - stagger < 1:
        raise ValueError(
            f"walltime {walltime_minutes} min is too short for a {margin_minutes} min retirement margin "
            f"and a {stagger} min stagger"
        )
    return lifetime, stagger


class DaskPresets(LoggingConfigurable):
    """The admin's Dask presets and the site settings shared by every preset's worker jobs."""

    presets = Dict(
        help="""
        Preset name -> preset (a dict with DaskPreset's keys)::

            {"small": {"description": "up to 8 workers, 1 core and 2 GB each, 1 h",
                       "partition": "cpu", "cores": 1, "memory_gb": 2, "walltime_minutes": 60,
                       "workers_per_job": 4, "max_workers": 8}}

        Keys: description, partition, cores and memory_gb (per worker), workers_per_job,
        walltime_minutes, account (used only when the user's session has none),
        extra_directives (sbatch options), max_workers, groups (who may use it; empty: every
        group whose ResourcePolicy entry has max_dask_workers > 0). The default is the
        embedded default's two local presets.
        """,
    ).tag(config=True)

    @default("presets")
    def _default_presets(self):
        # defaults skip @validate: build the typed presets here
        return {name: build_preset(name, value) for name, value in self._embedded_presets().items()}

    @staticmethod
    def _embedded_presets() -> dict:
        return {
            "small": {
                "description": "up to 8 workers, 1 core and 2 GB each, 1 h",
                "cores": 1, "memory_gb": 2, "walltime_minutes": 60, "workers_per_job": 4, "max_workers": 8,
            },
            "medium": {
                "description": "up to 16 workers, 2 cores and 4 GB each, 4 h",
                "cores": 2, "memory_gb": 4, "walltime_minutes": 240, "workers_per_job": 2, "max_workers": 16,
            },
        }

    @validate("presets")
    def _build_presets(self, proposal):
        return {name: build_preset(name, value) for name, value in proposal.value.items()}

    job_name = Unicode(
        "science-gateway-dask",
        help="""Job name of every worker job; inside a Slurm session the session's job id is appended
        (``science-gateway-dask-1234``), so stopping the session cancels exactly its workers.""",
    ).tag(config=True)
    interface = Unicode(
        "",
        help="""Network interface the Dask scheduler listens on and the workers use (e.g. ``ib0``);
        empty: the node's own address (the one Dask would advertise), never every address. ``lo``
        fits a single-machine cluster only. Connections are mutual TLS with credentials of each
        cluster's own either way.""",
    ).tag(config=True)
    death_timeout = Integer(
        60, min=1, help="Seconds a worker waits for a vanished scheduler (a killed kernel) before it exits and its job ends."
    ).tag(config=True)
    lifetime_margin_minutes = Integer(
        3,
        min=1,
        help="""Minutes before the walltime by which every worker has retired gracefully (its tasks
        moved to other workers) instead of being killed by the batch system.""",
    ).tag(config=True)
    job_script_prologue = List(
        Unicode(), help="Shell lines run in each worker job before the worker (e.g. `module load ...`); admin-written only."
    ).tag(config=True)
    log_directory = Unicode(
        "~/.science-gateway/dask-logs",
        help="""Where worker jobs write their output (`~` is the user's home). A folder of the
        user's own is kept at mode 0700; one that belongs to someone else (a site-wide folder) is
        left as the admin made it.""",
    ).tag(config=True)
    tls_directory = Unicode(
        "~/.science-gateway/dask-tls",
        help="""Folder, readable by the worker jobs (on every node, e.g. in the user's home), where each
        cluster's temporary TLS certificate and key are written for its workers (`~` is the user's
        home). The kernel keeps the folder at mode 0700 and the files at 0600 and removes them when
        the cluster closes.""",
    ).tag(config=True)
    submit_command = Unicode("sbatch", help="The sbatch command the kernel runs (a name on PATH or an absolute path).").tag(
        config=True
    )
    cancel_command = Unicode(
        "scancel",
        help="""The scancel command the kernel runs for its worker jobs. When a session stops, the hub
        cancels the session's leftover workers with the Slurm spawner's own ``scancel_path``.""",
    ).tag(config=True)

    condor_submit_command = Unicode(
        "condor_submit",
        help="The condor_submit command the kernel runs for HTCondor worker jobs (a name on PATH or an absolute path).",
    ).tag(config=True)
    condor_cancel_command = Unicode(
        "condor_rm",
        help="""The condor_rm command the kernel runs for its HTCondor worker jobs. When a session
        stops, the hub removes the session's leftover workers with the HTCondor spawner's own
        ``condor_rm_path``.""",
    ).tag(config=True)
    condor_requirements = Dict(
        Unicode(),
        help="""HTCondor only: preset partition -> ClassAd requirements expression of its worker
        jobs. The HTCondor spawner fills it from ``CondorSpawner.partitions`` (what the admin
        mapped each partition to), so workers land where the session's partition would.""",
    ).tag(config=True)

    #: site settings that travel to the kernel with the presets
    SITE_SETTINGS = (
        "job_name", "interface", "death_timeout", "lifetime_margin_minutes", "job_script_prologue",
        "log_directory", "tls_directory", "submit_command", "cancel_command", "condor_submit_command",
        "condor_cancel_command", "condor_requirements",
    )

    def site_settings(self) -> dict:
        return {name: getattr(self, name) for name in self.SITE_SETTINGS}

    def allowed(self, groups, *, max_dask_workers: int | None, partitions=None) -> dict[str, DaskPreset]:
        """The presets a member of ``groups`` may use, each with its effective ``max_workers``.

        ``max_dask_workers`` is the group policy's limit (``None``: no policy, as in the embedded
        default where workers are local processes); ``partitions`` the partitions the policy lets
        the groups use (``None``: any).
        """
        groups = set(groups)
        found = {}
        if max_dask_workers is not None and max_dask_workers < 1:
            return found
        for name, preset in self.presets.items():
            if preset.groups and not groups & set(preset.groups):
                continue
            if partitions is not None and preset.partition and preset.partition not in partitions:
                continue
            limit = preset.max_workers if max_dask_workers is None else min(preset.max_workers, max_dask_workers)
            found[name] = DaskPreset(**{**preset.as_dict(), "max_workers": limit})
        return found

    def user_view(
        self, *, backend: str, groups, max_dask_workers: int | None, partitions=None, account: str = "", comment: str = ""
    ) -> dict:
        """What one user's server learns (JSON-ready): their presets, limits, account and identity."""
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        presets = self.allowed(groups, max_dask_workers=max_dask_workers, partitions=partitions)
        total = max_dask_workers if max_dask_workers is not None else max((p.max_workers for p in presets.values()), default=0)
        return {
            "backend": backend,
            "groups": sorted(groups),
            "max_workers": total,
            "account": account,
            "comment": comment,
            "site": self.site_settings(),
            "presets": {name: preset.as_dict() for name, preset in presets.items()},
        }


@dataclass(frozen=True)
class UserDaskConfig:
    """One user's Dask presets and limits, as the hub resolved them (read in the kernel)."""

    backend: str
    presets: dict[str, DaskPreset]
    max_workers: int
    groups: tuple[str, ...] = ()
    account: str = ""
    comment: str = ""
    settings: DaskPresets = field(default_factory=DaskPresets)

    @classmethod
    def from_view(cls, view: dict) -> UserDaskConfig:
        settings = DaskPresets(presets=view.get("presets", {}), **view.get("site", {}))
        return cls(
            backend=view.get("backend", "local"),
            presets=dict(settings.presets),
            max_workers=int(view.get("max_workers", 0)),
            groups=tuple(view.get("groups", ())),
            account=view.get("account", ""),
            comment=view.get("comment", ""),
            settings=settings,
        )

    @classmethod
    def from_environ(cls, environ) -> UserDaskConfig:
        """From :data:`ENV_VAR`; without it (a plain Jupyter server) the embedded default's local presets."""
        raw = environ.get(ENV_VAR)
        if not raw:
            defaults = DaskPresets()
            return cls.from_view(defaults.user_view(backend="local", groups=(), max_dask_workers=None))
        return cls.from_view(json.loads(raw))

    def preset(self, name: str) -> DaskPreset:
        """The named preset, or :class:`DaskPresetError` listing what this user may use."""
        if name in self.presets:
            return self.presets[name]
        if not self.presets:
            raise DaskPresetError(
                f"you may not start Dask clusters: none of your groups ({', '.join(self.groups) or 'no groups'}) "
                "is allowed Dask workers; ask the gateway admins"
            )
        raise DaskPresetError(f"no Dask preset {name!r} for you; presets you may use: {', '.join(sorted(self.presets))}")

    def describe(self) -> dict:
        """The presets as a user (and ``GET /gateway/api/dask/presets``) sees them."""
        return {
            "backend": self.backend,
            "max_workers": self.max_workers,
            "account": self.account,
            "presets": {
                name: {
                    key: getattr(p, key)
                    for key in ("description", "partition", "cores", "memory_gb", "workers_per_job",
                                "walltime_minutes", "max_workers")
                }
                for name, p in sorted(self.presets.items())
            },
        }


def worker_job_name(base: str, session_job_id: str = "") -> str:
    """Worker jobs are named after the session's job, so its end can cancel exactly them."""
    return f"{base}-{session_job_id}" if session_job_id else base


def dask_environment(presets: DaskPresets, *, backend: str, groups, choices=None, account: str = "",
                     comment: str = "") -> dict[str, str]:
    """Environment variables for one user's server (pure: the caller supplies policy and identity).

    ``choices`` is the group policy's :class:`~science_gateway.core.policy.Choices` for the user
    (``None``: no policy, the embedded default). The same environment sets Dask's dashboard link
    to go through the user's server (jupyter-server-proxy).
    """
    view = presets.user_view(
        backend=backend,
        groups=groups,
        max_dask_workers=None if choices is None else choices.max_dask_workers,
        partitions=None if choices is None else set(choices.partitions),
        account=account,
        comment=comment,
    )
    return {ENV_VAR: json.dumps(view, sort_keys=True), DASHBOARD_LINK_ENV: DASHBOARD_LINK}
