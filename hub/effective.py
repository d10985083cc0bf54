"""The effective policy for one user: what the gateway's config lets them do, in one report.

Admins ask "what would alice get?" without logging in as alice. The answer comes from the same
objects the hub uses -- the configured authenticator's allow/admin rules, the spawner's group
resource policy (:class:`~science_gateway.core.policy.ResourcePolicy`) and the Dask presets as the spawner hands them
to a server (:func:`~science_gateway.core.presets.dask_environment`) -- so it cannot drift
from what the hub does. ``science_gateway.admin`` is the notebook API over it.
"""

from __future__ import annotations

import asyncio
import html
import inspect
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib.metadata import entry_points

from traitlets.config import Config
from traitlets.utils.importstring import import_item

from ..core.policy import ResourcePolicy
from ..core.presets import ENV_VAR, DaskPresets, dask_environment


@dataclass(frozen=True)
class EffectivePolicy:
    """What one user may do on this gateway (see :func:`effective_policy`)."""

    username: str
    groups: tuple[str, ...]
    may_log_in: bool
    login_reason: str
    admin: bool
    spawner: str
    partitions: dict[str, dict] = field(default_factory=dict)
    accounts: tuple[str, ...] = ()
    default_request: dict | None = None
    dask_backend: str = "local"
    dask_max_workers: int = 0
    dask_presets: dict[str, dict] = field(default_factory=dict)
    uses_resource_policy: bool = False

    def as_dict(self) -> dict:
        return asdict(self)

    def _repr_markdown_(self) -> str:
        e = lambda v: html.escape(str(v))  # noqa: E731 - user data in markdown
        lines = [
            f"### {e(self.username)}",
            f"- **groups:** {e(', '.join(self.groups) or 'none')}",
            f"- **may log in:** {'yes' if self.may_log_in else 'no'} ({e(self.login_reason)})",
            f"- **admin:** {'yes' if self.admin else 'no'}",
            f"- **servers:** {e(self.spawner)}",
        ]
        if self.uses_resource_policy:
            if self.partitions:
                lines += ["", "| partition | max cores | max memory (GB) | max GPUs | max walltime (h) |", "|---|---|---|---|---|"]
                lines += [
                    f"| {e(n)} | {p['max_cores']} | {p['max_memory_gb']} | {p['max_gpus']} | {p['max_walltime_hours']} |"
                    for n, p in self.partitions.items()
                ]
                lines += ["", f"- **accounts:** {e(', '.join(self.accounts) or 'none')}"]
                if self.default_request:
                    lines.append(f"- **form starts at:** {e(_request_text(self.default_request))}")
            else:
                lines.append("- **resources:** none: no group of theirs is in the resource policy, so they cannot start a server")
        else:
            lines.append("- **resources:** the spawner applies no group resource policy")
        lines.append(f"- **Dask:** {self.dask_backend} workers, at most {self.dask_max_workers} at once")
        if self.dask_presets:
            lines += ["", "| Dask preset | cores | memory (GB) | workers per job | max workers | walltime (min) |",
                      "|---|---|---|---|---|---|"]
            lines += [
                f"| {e(n)} | {p['cores']} | {p['memory_gb']} | {p['workers_per_job']} | {p['max_workers']} | {p['walltime_minutes']} |"
                for n, p in self.dask_presets.items()
            ]
        else:
            lines.append("- **Dask presets:** none")
        return "\n".join(lines)


def _request_text(request: dict) -> str:
    text = (f"{request['partition']}, {request['cores']} cores, {request['memory_gb']} GB, "
            f"{request['walltime_hours']} h")
    return text + (f", account {request['account']}" if request.get("account") else "")


def resolve_class(value, group: str):
    """A JupyterHub ``*_class`` setting (entry point name, import string or class) as a class."""
    if not isinstance(value, str):
        return value
    for ep in entry_points(group=group):
        if ep.name == value:
            return ep.load()
    return import_item(value)


def _run(coro):
    """Run a coroutine to the end, also from a notebook whose event loop is running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _login_rule(authenticator, username: str, groups) -> tuple[bool, str]:
    """The authenticator's own ``check_allowed`` for a user with these groups, and why."""
    users = getattr(authenticator, "users", None)
    if isinstance(users, dict) and username not in users:  # a fixed user table (the demo login)
        return False, f"{username} is not in {type(authenticator).__name__}.users"
    model = {"name": username, "groups": sorted(groups), "admin": False, "auth_state": {}}
    try:
        allowed = authenticator.check_allowed(username, model)
        if inspect.isawaitable(allowed):
            allowed = await allowed
    except Exception as e:  # GatewayOAuthenticator refuses with the 403 page's message
        return False, getattr(e, "jupyterhub_message", None) or str(e)
    if not allowed:
        return False, "no allow rule admits them"
    if getattr(authenticator, "allow_all", False):
        return True, "every authenticated user is allowed"
    if username in getattr(authenticator, "allowed_users", ()):
        return True, "listed in allowed_users"
    via = sorted(set(groups) & set(getattr(authenticator, "allowed_groups", ()) or ()))
    return True, f"member of {', '.join(via)}" if via else "an allow rule admits them"


def _is_admin(authenticator, username: str, groups) -> bool:
    return username in getattr(authenticator, "admin_users", ()) or bool(
        set(groups) & set(getattr(authenticator, "admin_groups", ()) or ())
    )


def effective_policy(config: Config, username: str, groups, *, admin: bool | None = None) -> EffectivePolicy:
    """What ``username`` with ``groups`` may do under ``config`` (the hub's config).

    ``admin`` is what the hub knows (e.g. from its API); without it the authenticator's
    ``admin_users``/``admin_groups`` decide.
    """
    groups = tuple(sorted(set(groups)))
    hub = config.get("JupyterHub", {})
    auth_class = resolve_class(hub.get("authenticator_class", "jupyterhub.auth.PAMAuthenticator"),
                               "jupyterhub.authenticators")
    spawner_class = resolve_class(hub.get("spawner_class", "jupyterhub.spawner.LocalProcessSpawner"),
                                  "jupyterhub.spawners")
    authenticator = auth_class(config=config)
    may_log_in, reason = _run(_login_rule(authenticator, username, groups))
    uses_policy = "policy" in spawner_class.class_trait_names()
    presets = DaskPresets(config=config)
    if uses_policy:
        policy = ResourcePolicy(config=config)
        choices = policy.choices(groups)
        default = policy.default_request(groups)
        env = dask_environment(presets, backend="slurm", groups=groups, choices=choices)
    else:
        choices, default = None, None
        env = dask_environment(presets, backend="local", groups=groups)
    view = json.loads(env[ENV_VAR])
    return EffectivePolicy(
        username=username,
        groups=groups,
        may_log_in=may_log_in,
        login_reason=reason,
        admin=_is_admin(authenticator, username, groups) if admin is None else admin,
        spawner=f"{spawner_class.__name__} ({spawner_class.__module__})",
        partitions={n: lim.as_dict() for n, lim in choices.partitions.items()} if choices else {},
        accounts=choices.accounts if choices else (),
        default_request=default.as_options() if default else None,
        dask_backend=view["backend"],
        dask_max_workers=view["max_workers"],
        dask_presets=view["presets"],
        uses_resource_policy=uses_policy,
    )
