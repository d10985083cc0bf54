"""For gateway admins, in a notebook: what the gateway lets one user do::

    from science_gateway import admin
    admin.effective_policy("alice")                       # alice's groups, as the hub knows them
    admin.effective_policy("newcomer", groups=["students"])   # anyone in these groups

The report comes from the hub's own config (the embedded default plus the files named in
``$SCIENCE_GATEWAY_CONFIG``, or ``config_files=``) and the same code the hub runs: who may log in,
who is admin, the resource form's partitions, limits and accounts, and the Dask presets. A user's
groups come from the hub's REST API with this server's token: admins' servers may read users'
groups (``Spawner.server_token_scopes``), other users' servers may not.
"""

from __future__ import annotations

import os
from urllib.parse import quote

from .hub.config import CONFIG_ENV, site_config
from .hub.effective import EffectivePolicy
from .hub.effective import effective_policy as _effective_policy

__all__ = ["AdminError", "EffectivePolicy", "effective_policy", "hub_user"]


class AdminError(RuntimeError):
    """The hub would not answer (not an admin's token, no such user); the message says what to do."""


def hub_user(username: str, environ=None) -> dict:
    """The hub's model of ``username`` (name, admin, groups), read with this server's token."""
    import requests

    environ = os.environ if environ is None else environ
    url, token = environ.get("JUPYTERHUB_API_URL"), environ.get("JUPYTERHUB_API_TOKEN")
    if not url or not token:
        raise AdminError("not in a JupyterHub server (no JUPYTERHUB_API_URL/JUPYTERHUB_API_TOKEN): pass groups=[...]")
    r = requests.get(f"{url.rstrip('/')}/users/{quote(username, safe='')}", headers={"Authorization": f"token {token}"},
                     timeout=30)
    if r.status_code == 404:
        raise AdminError(f"the hub has no user {username!r} (or this token may not see them): pass groups=[...] "
                         "to see what a member of those groups would get")
    if r.status_code == 403:
        raise AdminError("this server's token may not read other users' groups: open this notebook in an admin's "
                         "server, or pass groups=[...]")
    r.raise_for_status()
    return r.json()


def effective_policy(username: str, *, groups=None, config_files=None, environ=None) -> EffectivePolicy:
    """What ``username`` may do: with ``groups`` given, as a member of those; else as the hub knows them."""
    environ = dict(os.environ if environ is None else environ)
    admin = None
    if groups is None:
        model = hub_user(username, environ)
        groups, admin = model.get("groups") or [], bool(model.get("admin"))
    if config_files is not None:
        environ[CONFIG_ENV] = os.pathsep.join(map(str, config_files))
    return _effective_policy(site_config(environ), username, groups, admin=admin)
