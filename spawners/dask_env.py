"""What a spawner hands to a user's server about Dask, and the cancel of leftover worker jobs.

The hub resolves the user's presets and limits once, from the admin's ``DaskPresets`` and the
group policy (``ResourcePolicy``), and passes them to the server as JSON in
``SCIENCE_GATEWAY_DASK``; the kernel's ``science_gateway.dask`` reads them back. The same
environment sets Dask's dashboard link to go through the user's server (jupyter-server-proxy).
"""

from __future__ import annotations

import json

from ..jupyter_ext.dask.presets import DASHBOARD_LINK, DASHBOARD_LINK_ENV, ENV_VAR, DaskPresets


def dask_environment(presets: DaskPresets, *, backend: str, groups, choices=None, account: str = "",
                     comment: str = "") -> dict[str, str]:
    """Environment variables for one user's server (pure: the caller supplies policy and identity).

    ``choices`` is the group policy's :class:`~science_gateway.hub.policy.Choices` for the user
    (``None``: no policy, the embedded default).
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


def build_cancel_workers_argv(scancel: str, prefix: list[str], job_name: str, username: str) -> list[str]:
    """``scancel`` of every job named ``job_name`` of ``username`` (a session's Dask workers)."""
    if not job_name or not username:
        raise ValueError("need a job name and a user to cancel worker jobs")
    return [*prefix, scancel, f"--name={job_name}", f"--user={username}"]
