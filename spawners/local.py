"""The embedded default's spawner: each user's Jupyter server as a local process.

All servers run as the hub's own unix user, with a home directory per hub user under
:attr:`LocalSpawner.home_dir_template`. So **every user can read every other user's files and the
hub's own state (its database and cookie secret)**: right for one person trying the gateway on a
laptop or a test machine, not for a shared one. Production gateways spawn on Slurm (Kubernetes is next),
where each user's server runs as that user.

What it refuses:

- **root**: a hub started by root would run every user's server as root; :meth:`LocalSpawner.start`
  refuses (run the demo as a normal user, or configure a real spawner) unless
  :attr:`LocalSpawner.allow_root` says otherwise.
- **spawn options**: it uses none, so any ``user_options`` is refused with 400 (and not kept as the
  user's defaults), instead of being stored and served back whatever its size.
"""

import os

from jupyterhub.spawner import SimpleLocalProcessSpawner, SpawnException
from traitlets import Bool, default

from ..core.presets import DaskPresets, dask_environment
from ..core.text import quote_prefix
from .base import RefusedOptionsMixin

ROOT_MESSAGE = (
    "This gateway's embedded default runs every user's server as the hub's own unix user, and the hub "
    "runs as root, so it will not start servers. Run the demo as a normal user, or configure a real "
    "spawner (Slurm, Kubernetes) that runs each server as its user."
)


def refuse_user_options(spawner, user_options):
    """The local spawner's ``apply_user_options``: it takes none, so any option is a 400."""
    if not user_options:
        return
    keys = sorted(map(str, user_options))
    shown = ", ".join(quote_prefix(k, 32) for k in keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
    # neither kept as the user's defaults for the next spawn nor served back in the user's model:
    # RefusedOptionsMixin forgets them
    raise SpawnException(f"This gateway's local servers take no spawn options; got {shown}.",
                         reason="user_options", status_code=400)


class LocalSpawner(RefusedOptionsMixin, SimpleLocalProcessSpawner):
    """`SimpleLocalProcessSpawner` with the gateway's defaults: JupyterLab, a per-user home, no
    root, no spawn options (see the module docstring)."""

    metrics_backend = "local"

    allow_root = Bool(
        False,
        help="""Start users' servers even when the hub runs as root (they then run as root). Off:
        a hub started by root refuses to start servers, with a message saying to run the demo as a
        normal user or configure a real spawner. Turn on only where nothing else shares the
        machine (a throwaway container, CI).""",
    ).tag(config=True)

    @default("home_dir_template")
    def _home_dir_template_default(self):
        return os.path.join(os.environ.get("SCIENCE_GATEWAY_STATE_DIR", "/tmp/science-gateway"), "home", "{username}")

    @default("args")
    def _args_default(self):
        # Jupyter Server refuses to run as root unless told; start() refuses first unless allowed.
        return ["--ServerApp.allow_root=True"] if os.geteuid() == 0 and self.allow_root else []

    @default("default_url")
    def _default_url_default(self):
        return "/lab"

    @default("apply_user_options")
    def _apply_user_options_default(self):
        return refuse_user_options

    async def start(self):
        with self.counting_spawn():
            if os.geteuid() == 0 and not self.allow_root:
                raise SpawnException(ROOT_MESSAGE, reason="root", status_code=503)
            return await super().start()

    def get_env(self):
        env = super().get_env()
        # Dask presets as local clusters: the user's own machine, no group policy on workers.
        groups = sorted(g.name for g in self.user.groups)
        env.update(dask_environment(DaskPresets(parent=self), backend="local", groups=groups))
        return env
