"""For gateway admins, in a notebook: what the gateway lets one user do::

    from science_gateway import admin
    admin.effective_policy("alice")                       # alice's groups, as the hub knows them
    admin.effective_policy("newcomer", groups=["students"])   # anyone in these groups

The report comes from the hub itself (``GET {hub_api}/gateway/effective-policy/{username}``, with
this server's token): its running authenticator's login and admin rules, the spawner's resource
policy (partitions, limits, accounts) and the Dask presets. Only admins get it: the hub answers
anyone else 403, and this module raises :class:`AdminError` with the hub's message.
"""

from __future__ import annotations

import os
from urllib.parse import quote

from .core.effective import EffectivePolicy

__all__ = ["AdminError", "EffectivePolicy", "effective_policy"]


class AdminError(RuntimeError):
    """The hub would not answer (not an admin, no such user); the message says what to do."""


def _hub_message(response) -> str:
    try:
        message = response.json().get("message")
    except ValueError:
        message = None
    return message or f"HTTP {response.status_code}"


def effective_policy(username: str, *, groups=None, environ=None, timeout: float = 30) -> EffectivePolicy:
    """What ``username`` may do: with ``groups`` given, as a member of those; else as the hub knows them."""
    import requests

    environ = os.environ if environ is None else environ
    url, token = environ.get("JUPYTERHUB_API_URL"), environ.get("JUPYTERHUB_API_TOKEN")
    if not url or not token:
        raise AdminError("not in a JupyterHub server (no JUPYTERHUB_API_URL/JUPYTERHUB_API_TOKEN): the report "
                         "comes from the hub, so run this in an admin's server")
    params = None if groups is None else {"groups": ",".join(groups)}
    r = requests.get(
        f"{url.rstrip('/')}/gateway/effective-policy/{quote(username, safe='')}",
        params=params,
        headers={"Authorization": f"token {token}"},
        timeout=timeout,
    )
    if r.status_code != 200:
        raise AdminError(f"the hub refused the effective-policy report ({r.status_code}): {_hub_message(r)}")
    return EffectivePolicy.from_dict(r.json())
