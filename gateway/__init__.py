"""Science Gateway: a JupyterHub extension for federated research infrastructures.

This package is the notebook-facing Python API (``from science_gateway import catalog, dask, jobs``,
``science_gateway.widgets``, ``science_gateway.admin``), a client of the user's own server. The
other parts install under the same namespace, each importing only :mod:`science_gateway.core`:

- ``science_gateway.core``: the pure layer every part shares (policy, presets, catalogue models).
- ``science_gateway.hub``: runs in the JupyterHub process (authenticators, hub API routes).
- ``science_gateway.spawners``: runs in the JupyterHub process (spawners, the options form).
- ``science_gateway.jupyter_ext``: the server extension in each user's Jupyter server (the REST
  API, catalogue backends, the token keeper).

Importing this package has no side effects; everything is registered through entry points.
"""

from .core import __version__

__all__ = ["__version__"]
