"""The gateway's Jupyter server extension: the REST API under ``{base_url}/gateway/api/``."""

import os
import shutil
import sys

from jupyter_server.extension.application import ExtensionApp
from traitlets import Float, Instance, Type, Unicode, default

from ..core import __version__
from ..core.logs import scrub_library_logs
from ..core.metrics import server_metrics
from . import proxy_guard
from ..core.activity import live_kernel_clusters, register_busy_source
from .activity import ActivityKeeper
from .session import JobSession
from ..core.typed import check_settings
from .catalog.base import CatalogBackend
from .catalog.demo import DemoCatalog
from .handlers import handlers
from .launch import LaunchPageHandler
from .tokens import TokenKeeper


class GatewayExtension(ExtensionApp):
    """Serves the gateway's REST API from each user's Jupyter server."""

    name = "science_gateway"
    extension_url = "/gateway/api/"
    load_other_extensions = True

    catalog_class = Type(
        DemoCatalog,
        klass=CatalogBackend,
        help="""The catalogue backend class (a CatalogBackend subclass). Its own settings are
        configured on that class, e.g. `c.DemoCatalog.catalog_file`.""",
    ).tag(config=True)

    catalog = Instance(CatalogBackend, help="The catalogue backend instance, built from catalog_class.")

    @default("catalog")
    def _catalog_default(self):
        return self.catalog_class(parent=self, log=self.log)

    token_keeper = Instance(TokenKeeper, help="Keeps the user's OIDC access token fresh in a file (see TokenKeeper).")

    @default("token_keeper")
    def _token_keeper_default(self):
        return TokenKeeper(parent=self, log=self.log)

    activity_interval = Float(
        30.0,
        help="""Seconds between the checks for work in flight (a busy kernel, a Dask cluster the
        server holds, a stage-in request not done yet). While any holds, the server's last
        activity is set to now, so the hub's idle culler does not stop it (docs/operations.md).
        Keep it well below the culler's timeout (``IdleCulling.timeout``); 0 turns the checks off.""",
    ).tag(config=True)

    activity = Instance(ActivityKeeper, allow_none=True, help="The checks for work in flight (see activity_interval).")

    walltime_warning_minutes = Float(
        15.0,
        help="""Minutes before the server's batch job reaches its walltime from which
        ``GET /gateway/api/session`` carries a warning with the time left (for JupyterLab to show).""",
    ).tag(config=True)

    squeue_path = Unicode(
        "/usr/bin/squeue",
        help="""squeue, asked for the end time of the server's own Slurm job (``squeue -j
        $SLURM_JOB_ID -o %e``) when the job's environment has no ``SLURM_JOB_END_TIME`` (Slurm
        before 23.02); once per 5 minutes at most.""",
    ).tag(config=True)

    session = Instance(JobSession, allow_none=True, help="The server's batch job, for its end time (see squeue_path).")

    @default("session")
    def _session_default(self):
        return JobSession(os.environ, squeue=self.squeue_path)

    def staging_started(self) -> None:
        """A new stage-in request: the idle checks ask the catalogue until it is done."""
        if self.activity is not None:
            self.activity.staging_started()

    examples_dir = Unicode(
        help="""Folder of example notebooks copied into the server's root folder (the user's home)
        as `examples/` when the server starts and that folder does not exist yet, so a user's own
        changes are never overwritten and a deleted folder comes back fresh. Defaults to the
        examples installed with the package; empty to copy nothing.""",
    ).tag(config=True)

    @default("examples_dir")
    def _examples_dir_default(self):
        return os.path.join(sys.prefix, "share", "science-gateway", "examples")

    launch_dir = Unicode(
        help="""Folder of the notebooks a launch link may open (``/hub/launch?notebook=PATH``,
        PATH relative to this folder; docs/notebooks.md): the gateway's notebook library. Each
        launch copies the notebook into ``launched/`` in the user's home. Defaults to
        ``examples_dir``; empty to refuse every launch link's notebook.""",
    ).tag(config=True)

    @default("launch_dir")
    def _launch_dir_default(self):
        return self.examples_dir

    def copy_examples(self, root_dir: str) -> None:
        """Give the user the example notebooks, whatever spawned this server (it runs as the user)."""
        target = os.path.join(root_dir, "examples")
        if not self.examples_dir or not os.path.isdir(self.examples_dir) or os.path.lexists(target):
            return
        try:
            shutil.copytree(self.examples_dir, target)
        except OSError as e:  # a read-only or full home must not stop the server
            self.log.warning("Science Gateway: could not copy the example notebooks to %s: %s", target, e)

    def initialize_handlers(self):
        deps = {"extension": self}
        self.handlers.extend((f"/gateway/api{path}", handler, deps) for path, handler in handlers)
        self.handlers.append(("/gateway/launch", LaunchPageHandler, deps))
        # /proxy/PORT/ to this user's own ports only (see proxy_guard): now, and at start for
        # a jupyter-server-proxy loaded after us
        proxy_guard.install(self.serverapp.web_app)

    def initialize_settings(self):
        scrub_library_logs()  # the server's log lines without JupyterHub's XSRF cookie ids (core.logs)
        # A misspelt setting stops the server with the key named: traitlets only warns, and
        # jupyter_server would go on without the extension (users would meet a 404 much later).
        try:
            check_settings(self.config, (type(self), self.catalog_class, TokenKeeper), "Science Gateway server config")
        except ValueError as e:
            self.log.critical("%s", e)
            raise SystemExit(1) from None
        self.log.info("Science Gateway %s: catalogue %s", __version__, self.catalog.display_name)
        self.copy_examples(self.serverapp.root_dir)
        settings = self.serverapp.web_app.settings
        self.activity = ActivityKeeper(settings, self.catalog, server_metrics(settings), interval=self.activity_interval)
        runtime_dir = self.serverapp.runtime_dir
        register_busy_source(settings, "kernel-dask", lambda: live_kernel_clusters(runtime_dir) > 0)

    async def _start_jupyter_server_extension(self, serverapp):
        proxy_guard.install(serverapp.web_app)
        self.token_keeper.start()
        if self.activity is not None:
            self.activity.start()

    async def stop_extension(self):
        if self.activity is not None:
            await self.activity.stop()
        await self.token_keeper.stop()
        await self.catalog.close()
