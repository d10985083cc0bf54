"""The embedded default's spawner: each user's Jupyter server as a local process.

All servers run as the hub's own unix user, with a home directory per hub user under
:attr:`LocalSpawner.home_dir_template`. That is right for a single person's laptop or a test
machine, not for a shared one: production gateways spawn on Slurm or Kubernetes.
"""

import os

from jupyterhub.spawner import SimpleLocalProcessSpawner
from traitlets import default

from ..core.presets import DaskPresets, dask_environment


class LocalSpawner(SimpleLocalProcessSpawner):
    """`SimpleLocalProcessSpawner` with the gateway's defaults: JupyterLab, a per-user home."""

    @default("home_dir_template")
    def _home_dir_template_default(self):
        return os.path.join(os.environ.get("SCIENCE_GATEWAY_STATE_DIR", "/tmp/science-gateway"), "home", "{username}")

    @default("args")
    def _args_default(self):
        # Jupyter Server refuses to run as root unless told; the hub decides who may start it.
        return ["--ServerApp.allow_root=True"] if os.geteuid() == 0 else []

    @default("default_url")
    def _default_url_default(self):
        return "/lab"

    def get_env(self):
        env = super().get_env()
        # Dask presets as local clusters: the user's own machine, no group policy on workers.
        groups = sorted(g.name for g in self.user.groups)
        env.update(dask_environment(DaskPresets(parent=self), backend="local", groups=groups))
        return env
