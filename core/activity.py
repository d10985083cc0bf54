"""What keeps a user's server active for the hub's idle culler: the names the gateway's server
extensions share (``science_gateway.jupyter_ext.activity`` runs the checks)."""

from __future__ import annotations

#: the web application setting jupyter_server's ``last_activity()`` reads (it reads every setting
#: whose name ends in ``_last_activity``): set to now while work is in flight
ACTIVITY_KEY = "science_gateway_last_activity"
#: where extensions register their busy sources: name -> callable returning a bool
BUSY_SOURCES_KEY = "science_gateway_busy_sources"


def register_busy_source(settings: dict, name: str, busy) -> None:
    """Make ``busy()`` (a quick, non-blocking callable) count as the server's activity while it is
    true; ``settings`` are the server's web application settings."""
    settings.setdefault(BUSY_SOURCES_KEY, {})[name] = busy
