"""What the hub benchmarks share: the benchmark's service token, unix users, Slurm wrappers and the
stock-vs-ours Slurm spawner configs.

``slurm_poll.py`` and ``login_storm.py`` import this (``benchmarks/`` is on ``sys.path`` when a
benchmark runs as a script); it puts ``tests/`` on ``sys.path`` for the ``sgtest`` helpers.

- :func:`slurm_spawner_config`: the two Slurm variants on the same Slurm, same resources (1 core,
  1 GiB, 1 h on partition ``cpu``), same ``Spawner.poll_interval``: **stock** batchspawner 1.3
  ``SlurmSpawner`` (its ``squeue`` through a logging wrapper, run through ``sudo -u USER`` as
  batchspawner does), **ours** ``science-gateway-slurm`` with a ``ResourcePolicy`` that allows
  exactly that to one group, and the shared poller's ``squeue`` through the same kind of wrapper.
- :func:`bench_service`: a service token that may start, stop and look at every user's server.
- :class:`Bench`: that token's view of one hub (spawn, stop, is the server answering).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))
from sgtest.commands import FakeCommand  # noqa: E402
from sgtest.hub import RunningHub, wait_for  # noqa: E402

#: the Slurm commands that ask the controller about jobs (counted by the wrappers)
QUERY_COMMANDS = ("squeue", "sacct", "scontrol")
#: the unix accounts (and hub users) of the benchmarks: sgbench01, sgbench02, ...
USER_PREFIX = "sgbench"
#: what every server of both variants asks Slurm for
PARTITION, CORES, MEMORY_GB, WALLTIME_HOURS = "cpu", 1, 1, 1


def bench_users(count: int, first: int = 1) -> list[str]:
    return [f"{USER_PREFIX}{i:02d}" for i in range(first, first + count)]


def ensure_users(names):
    """Create the unix accounts ``names`` (with homes) that do not exist yet."""
    for name in names:
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)


def make_wrappers(directory: Path) -> Path:
    """Logging wrappers of the query commands (sgtest.commands.FakeCommand), one shared log."""
    log = directory / "calls.log"
    for name in QUERY_COMMANDS:
        FakeCommand(directory, name, real=shutil.which(name) or f"/usr/bin/{name}", log=log)
    return log


def proxy_on_path(prefix: str) -> None:
    """Put configurable-http-proxy on PATH from where ``scripts/test`` installs it in a venv."""
    proxy_bin = Path(prefix) / "share/science-gateway/proxy/node_modules/.bin"
    if not shutil.which("configurable-http-proxy") and proxy_bin.is_dir():
        os.environ["PATH"] = f"{proxy_bin}{os.pathsep}{os.environ['PATH']}"


def add_run_arguments(parser, keep: str = "the hubs' state dirs and logs", report: bool = True) -> None:
    """``--prefix``, ``--json``, ``--keep`` (``keep``: what it keeps) and ``--report``."""
    parser.add_argument("--prefix", default=os.environ.get("SG_TEST_VENV") or sys.prefix,
                        help="world-readable venv holding jupyterhub-singleuser")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--keep", action="store_true", help=f"keep {keep}")
    if report:
        parser.add_argument("--report", metavar="JSON", help="only print the tables of a saved --json file")


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


def bench_service(token: str) -> dict:
    """``JupyterHub`` traits of a service ``bench`` with ``token``: start, stop and reach any server."""
    return {
        "services": [{"name": "bench", "api_token": token}],
        "load_roles": [
            {"name": "bench", "scopes": ["admin:users", "admin:servers", "access:servers", "read:users", "tokens"],
             "services": ["bench"]}
        ],
    }


def slurm_spawner_config(variant: str, wrappers: Path, prefix: str, poll: float, group: str, nice: int = 0) -> dict:
    """Config sections of the ``stock`` or ``ours`` Slurm spawner (``group``: the hub group ours'
    policy allows the partition to; stock has no policy). Merge them over the hub's own sections.
    ``nice``: the servers' process niceness, on both sides (0: unchanged)."""
    server = [f"{prefix}/bin/jupyterhub-singleuser"]
    # stock runs `srun {batchspawner_singleuser_cmd} {cmd}`, the wrapper exec'ing the server in-process
    wrapper = f"{prefix}/bin/batchspawner-singleuser"
    if nice:
        server = ["/usr/bin/nice", "-n", str(nice), *server] if variant == "ours" else server
        wrapper = f"/usr/bin/nice -n {nice} {wrapper}"
    config = {
        "JupyterHub": {},
        "Spawner": {"poll_interval": poll, "http_timeout": 300, "start_timeout": 600,
                    "cmd": server, "default_url": "/lab"},
    }
    if variant == "stock":
        config["JupyterHub"]["spawner_class"] = "batchspawner.SlurmSpawner"
        config["SlurmSpawner"] = {
            "batchspawner_singleuser_cmd": wrapper,
            "batch_query_cmd": f"{wrappers}/squeue -h -j {{job_id}} -o '%T %B'",
            "req_partition": PARTITION,
            "req_memory": f"{MEMORY_GB}G",
            "req_nprocs": str(CORES),
            "req_runtime": f"{WALLTIME_HOURS:02d}:00:00",
        }
    elif variant == "ours":
        config["JupyterHub"]["spawner_class"] = "science-gateway-slurm"
        config["SlurmSpawner"] = {"python_prefix": prefix, "job_name": f"sgbench-{secrets.token_hex(3)}"}
        config["SlurmQueuePoller"] = {"squeue": f"{wrappers}/squeue", "interval": poll, "fast_interval": 0.5}
        config["ResourcePolicy"] = {"groups": {group: {"partitions": {PARTITION: {
            "max_cores": CORES, "max_memory_gb": MEMORY_GB, "max_walltime_hours": WALLTIME_HOURS}}}}}
    else:
        raise ValueError(f"variant must be stock or ours, not {variant!r}")
    return config


def merge_config(*configs: dict) -> dict:
    """Config sections merged class by class (a later trait replaces an earlier one)."""
    merged: dict = {}
    for config in configs:
        for cls, traits in config.items():
            merged.setdefault(cls, {}).update(traits)
    return merged


def slurm_jobs_of(users) -> list[str]:
    """Job ids Slurm still lists for ``users`` (any state it still shows)."""
    out = subprocess.run(["squeue", "-h", "-o", "%i", "-u", ",".join(users)], capture_output=True, text=True,
                         timeout=30).stdout
    return out.split()


class Bench:
    """The benchmark service's view of one hub: spawn, stop, and whether a server answers."""

    def __init__(self, hub: RunningHub, token: str, body: dict | None = None):
        self.hub = hub
        self.body = body or {}
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"token {token}"

    def api(self, method, path, **kw):
        return self.http.request(method, f"{self.hub.url}/hub/api{path}", timeout=60, **kw)

    def answers(self, name) -> bool:
        r = self.http.get(f"{self.hub.url}/user/{name}/api/status", timeout=10, allow_redirects=False)
        return r.status_code == 200

    def spawn(self, name, timeout=600) -> float:
        t0 = time.monotonic()
        r = self.api("POST", f"/users/{name}/server", json=self.body)
        if r.status_code not in (201, 202):
            raise RuntimeError(f"spawn {name}: {r.status_code} {r.text}")
        wait_for(lambda: self.answers(name), timeout, interval=0.1, what=f"{name}'s server")
        return time.monotonic() - t0

    def stop(self, name, timeout=180):
        self.api("DELETE", f"/users/{name}/server")
        wait_for(lambda: not self.api("GET", f"/users/{name}").json()["servers"], timeout, interval=0.2,
                 what=f"{name}'s server to stop")
