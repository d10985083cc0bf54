"""The traitlets config of the real Jupyter Server that the server-extension tests run (pytest_jupyter).

conftest.py's ``jp_server_config`` is :func:`server_config` of the module's ``gateway_config``
fixture: the gateway extension enabled and every request authenticated
(``allow_unauthenticated_access=False``; ``jp_fetch`` sends the server's token), plus what the
module sets, e.g. ``{"GatewayExtension": {"catalog_class": ...}, "RucioCatalog": {...}}``.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

from traitlets.config import Config

BASE = {
    "ServerApp": {
        "jpserver_extensions": {"science_gateway.jupyter_ext": True},
        "allow_unauthenticated_access": False,
    },
}


#: the server extensions the project installs (their jupyter_server_config.d files)
INSTALLED_EXTENSIONS = ("jupyterlab", "science_gateway.jupyter_ext", "science_gateway.dask.server", "jupyter_lsp", "jupyter_server_proxy",
                        "jupyter_server_terminals", "notebook_shim")


def small_server_env(folder: Path) -> dict:
    """The environment of the smallest real user server: ``jupyterhub-singleuser`` (Jupyter
    Server and the hub's auth, so the REST API and the proxy work as usual) without JupyterLab,
    the gateway extension or any other server extension. For tests that run many servers at once
    on a small machine. Writes a world-readable config folder into ``folder``."""
    config_dir = Path(folder) / "small-server-config"
    config_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chmod(config_dir, 0o755)
    path = config_dir / "jupyter_server_config.json"
    path.write_text(json.dumps({"ServerApp": {"jpserver_extensions": {name: False for name in INSTALLED_EXTENSIONS}}}))
    os.chmod(path, 0o644)
    # an extra config path (read-only, above the environment's own), not the user's config dir
    # (which the server writes to)
    return {"JUPYTER_CONFIG_PATH": str(config_dir)}


def server_config(extra: dict | None = None) -> Config:
    """BASE with ``extra`` merged in, section by section (a section's keys update BASE's)."""
    # a deep copy: pytest_jupyter adds its own extensions to the config's dicts in place
    merged = copy.deepcopy(BASE)
    for section, traits in (extra or {}).items():
        if not isinstance(traits, dict):
            raise TypeError(f"gateway_config[{section!r}] must be a dict of traits, not {type(traits).__name__}")
        merged.setdefault(section, {}).update(traits)
    return Config(merged)
