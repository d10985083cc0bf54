"""The effective policy for one user: what the gateway's config lets them do, in one report.

Admins ask "what would alice get?" without logging in as alice. The hub answers at
``GET /hub/api/gateway/effective-policy/{username}`` (:mod:`.api`) from its own running objects --
the authenticator's allow/admin rules, the spawner's group resource policy
(:class:`~science_gateway.core.policy.ResourcePolicy`) and the Dask presets as the spawner hands
them to a server (:func:`~science_gateway.core.presets.dask_environment`) -- so it cannot drift
from what the hub does. ``science_gateway.admin`` is the notebook client of that route.
"""

from __future__ import annotations

import inspect
import json

from traitlets.config import Config

from ..core.effective import EffectivePolicy
from ..core.policy import ResourcePolicy
from ..core.presets import ENV_VAR, DaskPresets, dask_environment

__all__ = ["EffectivePolicy", "effective_policy"]


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


async def effective_policy(
    authenticator, spawner_class: type, config: Config, username: str, groups, *, admin: bool | None = None
) -> EffectivePolicy:
    """What ``username`` with ``groups`` may do under the hub's ``authenticator``, ``spawner_class``
    and ``config`` (the running hub's own objects, see :mod:`.api`).

    ``admin`` is what the hub knows about an existing user; without it the authenticator's
    ``admin_users``/``admin_groups`` decide.
    """
    groups = tuple(sorted(set(groups)))
    may_log_in, reason = await _login_rule(authenticator, username, groups)
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
