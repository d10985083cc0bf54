"""What keeps a user's server active for the hub's idle culler: the names the gateway's server
extensions share (``science_gateway.jupyter_ext.activity`` runs the checks)."""

from __future__ import annotations

import glob
import json
import os

#: the web application setting jupyter_server's ``last_activity()`` reads (it reads every setting
#: whose name ends in ``_last_activity``): set to now while work is in flight
ACTIVITY_KEY = "science_gateway_last_activity"
#: where extensions register their busy sources: name -> callable returning a bool
BUSY_SOURCES_KEY = "science_gateway_busy_sources"


def register_busy_source(settings: dict, name: str, busy) -> None:
    """Make ``busy()`` (a quick, non-blocking callable) count as the server's activity while it is
    true; ``settings`` are the server's web application settings."""
    settings.setdefault(BUSY_SOURCES_KEY, {})[name] = busy


#: a live Dask cluster of a kernel leaves a marker file named so in the Jupyter runtime dir (the
#: kernel's and its server's: the same user, node and environment)
CLUSTER_MARKER = "science-gateway-dask-{pid}-{key}.json"


def cluster_marker(runtime_dir: str, pid: int, key: str) -> str:
    return os.path.join(runtime_dir, CLUSTER_MARKER.format(pid=pid, key=key))


def write_cluster_marker(runtime_dir: str, pid: int, key: str, preset: str) -> str | None:
    """Say that a cluster runs in process ``pid`` (its kernel); returns the marker's path (None
    when it cannot be written: the cluster then does not count as activity, nothing else fails)."""
    path = cluster_marker(runtime_dir, pid, key)
    try:
        os.makedirs(runtime_dir, mode=0o700, exist_ok=True)
        with open(path, "w") as f:
            json.dump({"pid": pid, "preset": preset}, f)
    except OSError:
        return None
    return path


def remove_cluster_marker(path: str | None) -> None:
    if path:
        try:
            os.unlink(path)
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process with that pid: not the kernel's
        return False
    return True


def live_kernel_clusters(runtime_dir: str) -> int:
    """How many clusters whose process still runs have a marker in ``runtime_dir``; the markers of
    processes that ended (a killed kernel) are removed."""
    count = 0
    for path in glob.glob(os.path.join(glob.escape(runtime_dir), CLUSTER_MARKER.format(pid="*", key="*"))):
        try:
            pid = int(os.path.basename(path).split("-")[3])
        except (IndexError, ValueError):
            continue
        if _alive(pid):
            count += 1
        else:
            remove_cluster_marker(path)
    return count
