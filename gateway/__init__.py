"""Science Gateway: a JupyterHub extension for federated research infrastructures.

The three parts install under this namespace:

- ``science_gateway.hub``: runs in the JupyterHub process (authenticators, group policy).
- ``science_gateway.spawners``: runs in the JupyterHub process (spawners, the options form).
- ``science_gateway.jupyter_ext``: runs in each user's Jupyter server and kernel
  (the REST API, catalogue backends, the Python API the widgets use).

Importing this package has no side effects; everything is registered through entry points.
"""

__version__ = "0.1.0"


def _jupyter_server_extension_points():
    """Let ``jupyter server extension list`` find the extension under the distribution's name."""
    from .jupyter_ext import _jupyter_server_extension_points as points

    return points()
