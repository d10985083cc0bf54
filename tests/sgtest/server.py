"""The traitlets config of the real Jupyter Server that the server-extension tests run (pytest_jupyter).

conftest.py's ``jp_server_config`` is :func:`server_config` of the module's ``gateway_config``
fixture: the gateway extension enabled and every request authenticated
(``allow_unauthenticated_access=False``; ``jp_fetch`` sends the server's token), plus what the
module sets, e.g. ``{"GatewayExtension": {"catalog_class": ...}, "RucioCatalog": {...}}``.
"""

from __future__ import annotations

import copy

from traitlets.config import Config

BASE = {
    "ServerApp": {
        "jpserver_extensions": {"science_gateway.jupyter_ext": True},
        "allow_unauthenticated_access": False,
    },
}


def server_config(extra: dict | None = None) -> Config:
    """BASE with ``extra`` merged in, section by section (a section's keys update BASE's)."""
    # a deep copy: pytest_jupyter adds its own extensions to the config's dicts in place
    merged = copy.deepcopy(BASE)
    for section, traits in (extra or {}).items():
        if not isinstance(traits, dict):
            raise TypeError(f"gateway_config[{section!r}] must be a dict of traits, not {type(traits).__name__}")
        merged.setdefault(section, {}).update(traits)
    return Config(merged)
