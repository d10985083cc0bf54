"""Idle servers are stopped: the ``jupyterhub-idle-culler`` service, configured by the gateway.

:func:`culler_config` turns the :class:`IdleCulling` settings into the hub's service entry (the
culler runs as a hub-managed service, ``python -m jupyterhub_idle_culler``) and the role that lets
it list users, read their servers' activity and stop servers: nothing else. ``build_config`` merges
it into the hub's config.

The culler stops a server whose last activity, as the hub knows it, is older than
:attr:`IdleCulling.timeout`. A server with work in flight (a busy kernel, a Dask cluster it
holds, a stage-in not done yet) reports activity while it lasts
(``science_gateway.jupyter_ext.activity``), so only really idle servers are stopped.
"""

from __future__ import annotations

import importlib.util
import logging
import sys

from traitlets import Bool, Integer
from traitlets.config import Config, Configurable

SERVICE_NAME = "idle-culler"
#: what the culler needs (the culler's README) and no more: it never culls users (no admin:users)
CULLER_SCOPES = ["list:users", "read:users:activity", "read:servers", "delete:servers"]
#: "python -m jupyterhub_idle_culler": the module the culler's package installs
CULLER_MODULE = "jupyterhub_idle_culler"


class IdleCulling(Configurable):
    """When the hub stops idle servers (``c.IdleCulling.timeout = 3600``)."""

    enabled = Bool(
        True,
        help="""Run the idle culler as a hub service (needs the `culler` extra:
        ``pip install science-gateway[culler]``). Off: servers run until their users stop them
        (or, on Slurm, until their walltime ends).""",
    ).tag(config=True)

    timeout = Integer(
        3600,
        help="""Seconds without activity after which a server is stopped. Activity is what the
        hub last heard of the server: a request through the proxy, a kernel message, and while
        work is in flight (a busy kernel, a Dask cluster the server holds, a stage-in not done) the
        server's own reports (every `GatewayExtension.activity_interval` s, sent to the hub every
        $JUPYTERHUB_ACTIVITY_INTERVAL s). Keep it well above both intervals.""",
    ).tag(config=True)

    every = Integer(
        300,
        help="""Seconds between the culler's checks (its ``--cull-every``); a server is stopped
        between `timeout` and `timeout` + `every` seconds after its last activity.""",
    ).tag(config=True)

    max_age = Integer(
        0,
        help="""Seconds after which a server is stopped even if active (the culler's
        ``--max-age``); 0: no limit. On Slurm the job's walltime is the limit already.""",
    ).tag(config=True)

    concurrency = Integer(
        10, help="How many servers the culler stops at once (its ``--concurrency``)."
    ).tag(config=True)


def culler_command(culling: IdleCulling, python: str = sys.executable) -> list[str]:
    """The argv of the culler service (pure)."""
    argv = [python, "-m", CULLER_MODULE, f"--timeout={culling.timeout}", f"--cull-every={culling.every}",
            f"--concurrency={culling.concurrency}"]
    if culling.max_age:
        argv.append(f"--max-age={culling.max_age}")
    return argv


def culler_config(config: Config, python: str = sys.executable) -> Config:
    """What the hub's config gains for :class:`IdleCulling` as ``config`` sets it: the service and
    its role, added to the ``JupyterHub.services`` and ``load_roles`` already there (pure; an
    empty Config when culling is off)."""
    culling = IdleCulling(config=config)
    c = Config()
    if not culling.enabled:
        return c
    if importlib.util.find_spec(CULLER_MODULE) is None:
        logging.getLogger(__name__).warning(
            "IdleCulling.enabled, but %s is not installed (pip install science-gateway[culler]): idle servers "
            "are not stopped", CULLER_MODULE,
        )
        return c
    hub = config.get("JupyterHub", {})
    services = [s for s in hub.get("services", []) or [] if s.get("name") != SERVICE_NAME]
    roles = [r for r in hub.get("load_roles", []) or [] if r.get("name") != SERVICE_NAME]
    c.JupyterHub.services = services + [{"name": SERVICE_NAME, "command": culler_command(culling, python)}]
    c.JupyterHub.load_roles = roles + [{"name": SERVICE_NAME, "scopes": list(CULLER_SCOPES), "services": [SERVICE_NAME]}]
    return c
