"""The reference configuration: the embedded default, and site config files layered on top.

``jupyterhub_config.py`` at the top of the repository calls :func:`build_config`. With nothing set
it gives the embedded default (local login, local processes, the demo catalogue). A site switches
any part to production with config files named in ``SCIENCE_GATEWAY_CONFIG`` (``:``-separated):
YAML files in the traitlets shape (``{ClassName: {trait: value}}``, the same shape as the Zero to
JupyterHub chart's ``hub.config``) or Python files like any ``jupyterhub_config.py``.
"""

import logging
import os
import sqlite3
from contextlib import closing
from pathlib import Path

import yaml
from traitlets.config import Config, PyFileConfigLoader

from ..core.batch import NotebookJobs
from ..core.policy import ResourcePolicy
from ..core.presets import DaskPresets
from ..core.typed import check_settings
from .api import TOKEN_SCOPE, TOKEN_SCOPE_DESCRIPTION
from .culling import IdleCulling, culler_config
from .passwords import hash_password

STATE_DIR_ENV = "SCIENCE_GATEWAY_STATE_DIR"
CONFIG_ENV = "SCIENCE_GATEWAY_CONFIG"
#: A server's API token: JupyterHub's default (the `server` role) plus what JupyterHub grants only
#: to users who hold it: reading users' names and groups (admins: the admin notebook,
#: ``science_gateway.admin``) and the user's own access token from the gateway's token route (the
#: token keeper; the `user` role holds it, :data:`USER_ROLE`). Never ``admin:auth_state``: that
#: would hand the refresh token to every kernel.
SERVER_TOKEN_SCOPES = [
    "users:activity!user",
    "access:servers!server",
    "read:users:name",
    "read:users:groups",
    f"{TOKEN_SCOPE}!user",
]
#: JupyterHub's `user` role plus the gateway's token scope for the user's own name. A site config
#: that sets ``JupyterHub.load_roles`` replaces this list: keep this entry (docs/authentication.md).
USER_ROLE = {"name": "user", "scopes": ["self", f"{TOKEN_SCOPE}!user"]}
DEMO_USERS = {
    # name: (password, groups, admin); documented in the README
    "demo": ("demo", ["astro"], False),
    "admin": ("admin", ["astro", "gateway-admins"], True),
}
#: the demo's one login; the second (``demo``) only with ``SCIENCE_GATEWAY_DEMO_SECOND_USER=1``
#: (``./scripts/demo --second-user``): it runs as the same unix user and can read admin's files
DEMO_FIRST_USER = "admin"
SECOND_USER_ENV = "SCIENCE_GATEWAY_DEMO_SECOND_USER"


#: said on the login page (and by scripts/demo) whenever the embedded default's local spawner is in use
ONE_UNIX_USER_NOTICE = (
    "Demo gateway: every user's server runs as the same unix user on this machine, so any user can "
    "read every other user's files and the hub's secrets. Use it alone, on your own machine; "
    "production gateways start each user's server as that user's own account on Slurm, or in its own pod "
    "on Kubernetes."
)
LOCAL_SPAWNER = "science-gateway-local"


def default_state_dir() -> Path:
    return Path(os.environ.get(STATE_DIR_ENV) or Path.cwd() / ".gateway-state")


def gateway_pieces() -> Config:
    """What every gateway hub needs, wherever it runs: the gateway's token scope, the `user` role
    that holds it (:data:`USER_ROLE`) and the servers' token scopes (:data:`SERVER_TOKEN_SCOPES`)."""
    c = Config()
    c.JupyterHub.custom_scopes = {TOKEN_SCOPE: {"description": TOKEN_SCOPE_DESCRIPTION}}
    c.JupyterHub.load_roles = [USER_ROLE]
    c.Spawner.server_token_scopes = SERVER_TOKEN_SCOPES
    return c


def embedded_default(state_dir: Path, second_user: bool = False) -> Config:
    """No root, no services, no network: everything a first run needs, on loopback.

    One login (:data:`DEMO_FIRST_USER`), plus the rest of :data:`DEMO_USERS` with ``second_user``.
    """
    c = Config()
    c.JupyterHub.bind_url = os.environ.get("SCIENCE_GATEWAY_BIND_URL", "http://127.0.0.1:8000")
    c.JupyterHub.hub_ip = "127.0.0.1"
    c.JupyterHub.db_url = f"sqlite:///{state_dir / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(state_dir / "jupyterhub_cookie_secret")
    c.ConfigurableHTTPProxy.pid_file = str(state_dir / "jupyterhub-proxy.pid")
    c.JupyterHub.authenticator_class = "science-gateway-demo"
    c.JupyterHub.spawner_class = LOCAL_SPAWNER
    c.DemoAuthenticator.users = {
        name: {"password": hash_password(password), "groups": groups, "admin": admin}
        for name, (password, groups, admin) in DEMO_USERS.items()
        if second_user or name == DEMO_FIRST_USER
    }
    c.LocalSpawner.home_dir_template = str(state_dir / "home" / "{username}")
    c.Spawner.default_url = "/lab"
    c.merge(gateway_pieces())
    # The state dir travels to the servers so their extension keeps per-user state beside the hub's.
    c.Spawner.environment = {STATE_DIR_ENV: str(state_dir)}
    return c


def load_site_config(path: str | os.PathLike) -> Config:
    """Read one site config file (``.yaml``/``.yml``/``.json`` or ``.py``) into a Config."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{CONFIG_ENV} names {path}, which is not a file")
    if path.suffix == ".py":
        return PyFileConfigLoader(path.name, str(path.parent)).load_config()
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or not all(k[:1].isupper() for k in data):
        raise ValueError(f"{path}: expected a mapping of ClassName -> {{trait: value}}")
    return Config(data)


def site_config(environ=os.environ) -> Config:
    """The embedded default, then each file of ``$SCIENCE_GATEWAY_CONFIG`` merged in order (pure)."""
    c = embedded_default(default_state_dir(), second_user=environ.get(SECOND_USER_ENV) == "1")
    for path in filter(None, environ.get(CONFIG_ENV, "").split(os.pathsep)):
        c.merge(load_site_config(path))
    return c


def private_state(state_dir: Path, config: Config) -> None:
    """The state directory 0700 and the hub's secrets 0600, whatever the umask or an older run left.

    ``mkdir(mode=...)`` is ignored for a directory that exists and is cut by the umask for a new
    one, and SQLite creates the hub database (users, hashed API tokens, encrypted auth_state)
    0644: so the directory is chmod-ed, and the database file is created 0600 before JupyterHub
    opens it (SQLite's journal files take the database's mode).
    """
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(state_dir, 0o700)
    hub = config.get("JupyterHub", {})
    db_url = hub.get("db_url", "")
    db = Path(db_url[len("sqlite:///"):]) if db_url.startswith("sqlite:///") and ":memory:" not in db_url else None
    if db is not None and not db.exists():
        db.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(os.open(db, os.O_CREAT | os.O_WRONLY, 0o600))
    for path in (db, Path(hub["cookie_secret_file"]) if hub.get("cookie_secret_file") else None):
        if path is not None and path.exists():
            os.chmod(path, 0o600)
    if db is not None:
        write_ahead_log(db)


def write_ahead_log(db: Path) -> None:
    """Put the hub's SQLite database in write-ahead-log mode (persistent; idempotent).

    In SQLite's default mode every commit syncs the journal and the database to disk (~10 ms on
    the test machine's disk, vs ~1.6 ms with a WAL), and JupyterHub commits several times per
    login, spawn and activity report on its event loop: 50 logins at once queued behind those
    syncs. The WAL and its index take the database's mode (0600). Not for a database on a network
    file system (SQLite's WAL needs shared memory): point ``db_url`` at PostgreSQL there.
    """
    try:
        with closing(sqlite3.connect(db, timeout=10)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as e:  # e.g. a file system without shared memory: the default mode works
        logging.getLogger(__name__).warning("The hub database %s stays in SQLite's default journal mode: %s", db, e)


def check_policy(config: Config) -> None:
    """Build the resource policy, Dask presets and notebook pipelines once, so a typo stops the hub
    at start-up with the key named (not at the first spawn). Raises ValueError saying where."""
    check_settings(config, (ResourcePolicy, DaskPresets, NotebookJobs, IdleCulling), "Science Gateway config")
    for cls in (ResourcePolicy, DaskPresets, NotebookJobs, IdleCulling):
        try:
            cls(config=config)
        except Exception as e:  # a TraitError or ValueError naming the key
            raise ValueError(f"Science Gateway config: {cls.__name__}: {e}") from None


def build_config(environ=os.environ) -> Config:
    """The hub's config (:func:`site_config`), checked (:func:`check_policy`), with its state
    directory and secrets private (:func:`private_state`), the idle culler service
    (:func:`~.culling.culler_config`) and, while the local spawner is in use, the login page saying
    that all users share one unix user (:data:`ONE_UNIX_USER_NOTICE`)."""
    config = site_config(environ)
    check_policy(config)
    config.merge(culler_config(config))
    hub = config.JupyterHub
    if hub.get("spawner_class") == LOCAL_SPAWNER and "announcement_login" not in hub.get("template_vars", {}):
        hub.template_vars = {**hub.get("template_vars", {}), "announcement_login": ONE_UNIX_USER_NOTICE}
    private_state(default_state_dir(), config)
    return config




KUBERNETES_SPAWNER = "science-gateway-kubernetes"
#: the keys of one KubernetesSpawner.node_pools entry (spawners.kube_pod.NodePool)
NODE_POOL_KEYS = ("node_selector", "tolerations")
PROFILE_LIST_REFUSED = (
    "KubeSpawner.profile_list is not used by the Science Gateway's Kubernetes spawner (a profile's "
    "kubespawner_override would let a form choice set any spawner setting): describe what each group may "
    "use in ResourcePolicy.groups and map each partition to a node pool in KubernetesSpawner.node_pools "
    "(docs/kubernetes.md)"
)


def check_kubernetes(config: Config) -> None:
    """Start-up checks of a Kubernetes gateway: no ``profile_list``, a node pool for every policy
    partition, node pools with known keys. Raises ValueError saying what to change."""
    for section in ("KubeSpawner", "KubernetesSpawner"):
        if config.get(section, {}).get("profile_list"):
            raise ValueError(f"Science Gateway config: {section}.profile_list is set. {PROFILE_LIST_REFUSED}")
    if config.get("JupyterHub", {}).get("spawner_class") != KUBERNETES_SPAWNER:
        return
    pools = config.get("KubernetesSpawner", {}).get("node_pools", {}) or {}
    if not isinstance(pools, dict):
        raise ValueError("Science Gateway config: KubernetesSpawner.node_pools must be a mapping of partition -> pool")
    for name, pool in pools.items():
        unknown = sorted(set(pool) - set(NODE_POOL_KEYS)) if isinstance(pool, dict) else None
        if unknown is None or unknown:
            raise ValueError(
                f"Science Gateway config: KubernetesSpawner.node_pools[{name!r}] must be a mapping with the keys "
                f"{', '.join(NODE_POOL_KEYS)}" + (f"; unknown: {', '.join(map(str, unknown))}" if unknown else "")
            )
    partitions = sorted(
        {p for group in ResourcePolicy(config=config).groups.values() for p in group.partitions} - set(pools)
    )
    if partitions:
        raise ValueError(
            f"Science Gateway config: the partitions {', '.join(partitions)} of ResourcePolicy.groups have no node "
            "pool: add each to KubernetesSpawner.node_pools ({} runs on any node)"
        )


def kubernetes_config(environ=os.environ) -> Config:
    """What a hub inside the Zero to JupyterHub chart merges (the hub image's
    ``jupyterhub_config.d`` file, through :func:`merge_hub_config`): :func:`gateway_pieces`, the
    Kubernetes spawner, then each file of ``$SCIENCE_GATEWAY_CONFIG`` (the chart's
    ``gateway.yaml``) in order; checked like :func:`build_config` (:func:`check_policy`) and by
    :func:`check_kubernetes`. None of the embedded default's local parts (demo login, sqlite path,
    bind URL, local spawner, state dir): the chart and Zero to JupyterHub own those."""
    c = gateway_pieces()
    c.JupyterHub.spawner_class = KUBERNETES_SPAWNER
    for path in filter(None, environ.get(CONFIG_ENV, "").split(os.pathsep)):
        c.merge(load_site_config(path))
    check_policy(c)
    check_kubernetes(c)
    return c


def merge_hub_config(c: Config, extra: Config) -> Config:
    """``c.merge(extra)``, except that ``JupyterHub.load_roles`` and ``custom_scopes`` are combined:
    Zero to JupyterHub's own roles (its services') stay, a role of ``extra`` with the same name
    replaces it. Returns ``c``."""
    hub = c.get("JupyterHub", {})
    roles = list(hub.get("load_roles", []) or [])
    scopes = dict(hub.get("custom_scopes", {}) or {})
    c.merge(extra)
    extra_roles = extra.get("JupyterHub", {}).get("load_roles", []) or []
    names = {role.get("name") for role in extra_roles}
    c.JupyterHub.load_roles = [r for r in roles if r.get("name") not in names] + list(extra_roles)
    c.JupyterHub.custom_scopes = {**scopes, **(extra.get("JupyterHub", {}).get("custom_scopes", {}) or {})}
    return c
