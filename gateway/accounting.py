"""Your usage and allocations, from a notebook::

    from science_gateway import accounting
    mine = accounting.usage()                 # this server's user, from the hub
    mine["totals"]["notebook"]["core_hours"], mine["totals"]["dask"]["core_hours"]
    [(a["account"], a["left_core_hours"]) for a in mine["allocations"]]
    accounting.report("2026-01-01", "2026-12-31")            # admins: per VO, account, user
    accounting.report("2026-01-01", "2026-12-31", csv=True)  # the same as CSV text

Both ask the hub (``GET {hub_api}/gateway/usage`` and ``.../gateway/accounting/report``) with this
server's token; the hub answers from Slurm's accounting (slurmdbd), the same numbers the spawn form
shows. A user reads only their own usage; the report is for admins. A refusal raises
:class:`AccountingError` with the hub's message.
"""

from __future__ import annotations

import os

__all__ = ["AccountingError", "report", "usage"]


class AccountingError(RuntimeError):
    """The hub would not answer (accounting off, not an admin, ...); the message says why."""


def _get(path: str, params=None, environ=None, timeout: float = 30):
    import requests

    environ = os.environ if environ is None else environ
    url, token = environ.get("JUPYTERHUB_API_URL"), environ.get("JUPYTERHUB_API_TOKEN")
    if not url or not token:
        raise AccountingError("not in a JupyterHub server (no JUPYTERHUB_API_URL/JUPYTERHUB_API_TOKEN): usage "
                              "comes from the hub, so run this in your gateway server")
    r = requests.get(f"{url.rstrip('/')}/gateway/{path}", params=params,
                     headers={"Authorization": f"token {token}"}, timeout=timeout)
    if r.status_code != 200:
        try:
            message = r.json().get("message")
        except ValueError:
            message = None
        raise AccountingError(f"the hub refused ({r.status_code}): {message or r.reason}")
    return r


def usage(*, environ=None, timeout: float = 30) -> dict:
    """This server's user's usage: ``totals`` and ``by_account`` / ``by_group`` per kind (notebook,
    dask, other, all; each ``jobs``, ``core_hours``, ``gpu_hours``), and ``allocations`` (per account
    you may charge: ``limit_core_hours``, ``used_core_hours``, ``left_core_hours``, ``spent``,
    ``refusal``), counted from ``since`` until ``as_of``."""
    return _get("usage", environ=environ, timeout=timeout).json()


def report(start: str, end: str, *, csv: bool = False, environ=None, timeout: float = 120):
    """Admins: usage per VO, account, user and kind between the dates ``start`` and ``end``
    (YYYY-MM-DD, both included): a dict with ``rows``, or CSV text with ``csv=True``."""
    params = {"start": start, "end": end, "format": "csv" if csv else "json"}
    r = _get("accounting/report", params=params, environ=environ, timeout=timeout)
    return r.text if csv else r.json()
