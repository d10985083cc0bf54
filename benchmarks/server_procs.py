"""Jupyter servers as local processes, with and without the gateway extension, for benchmarks.

Shared by ``extension_load.py`` and ``extension_startup.py``: the same server, the same
config, the same token; the only difference between the two variants is whether
``science_gateway.jupyter_ext`` is enabled (the package's ``jupyter_server_config.d`` file
enables it, so the bare variant turns it off explicitly).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

TOKEN = "extension-bench-token"
EXTENSION = "science_gateway.jupyter_ext"

#: runs jupyter_server with asyncio debug mode and a slow-callback threshold (argv[1], seconds),
#: plus a watchdog thread that prints the event loop thread's stack (the frames in
#: science_gateway, else the innermost ones) whenever the loop has not come round for longer than
#: the threshold: asyncio's own report names only the task (tornado's RequestHandler._execute)
DEBUG_LAUNCHER = """
import asyncio, sys, threading, time, traceback
threshold = float(sys.argv.pop(1))
beat = [time.monotonic(), None]

def heartbeat(loop):
    beat[0] = time.monotonic()
    loop.call_later(threshold / 4, heartbeat, loop)

def watchdog():
    reported = None
    while True:
        time.sleep(threshold / 4)
        stalled = time.monotonic() - beat[0]
        if stalled > threshold and beat[1] is not None and reported != beat[0]:
            frames = traceback.extract_stack(sys._current_frames()[beat[1]])
            ours = [f for f in frames if "science_gateway" in f.filename] or frames[-3:]
            where = " <- ".join(f"{f.filename.split('site-packages/')[-1]}:{f.lineno} {f.name}" for f in reversed(ours[-4:]))
            print(f"LOOP STALL {stalled * 1000:.0f} ms in {where}", file=sys.stderr, flush=True)
            reported = beat[0]

class Policy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self):
        loop = super().new_event_loop()
        loop.set_debug(True)
        loop.slow_callback_duration = threshold
        beat[1] = threading.get_ident()
        loop.call_soon(heartbeat, loop)
        return loop

asyncio.set_event_loop_policy(Policy())
threading.Thread(target=watchdog, daemon=True).start()
from jupyter_server.serverapp import main
sys.exit(main())
"""


def write_config(path: Path, *, gateway: bool, root_dir: Path, extra: dict | None = None) -> Path:
    """A server config file: the extension on or off, token auth, nothing else of ours."""
    config = {
        "ServerApp": {
            "jpserver_extensions": {EXTENSION: gateway},
            "root_dir": str(root_dir),
            "open_browser": False,
            "allow_root": True,
            "allow_unauthenticated_access": False,
        },
        "IdentityProvider": {"token": TOKEN},
    }
    for section, traits in (extra or {}).items():
        config.setdefault(section, {}).update(traits)
    path.write_text(json.dumps(config, indent=1))
    return path


def server_argv(config: Path, port: int, python: str = sys.executable, debug_threshold: float | None = None) -> list[str]:
    launch = ["-c", DEBUG_LAUNCHER, str(debug_threshold)] if debug_threshold else ["-m", "jupyter_server"]
    return [python, *launch, f"--config={config}", f"--ServerApp.port={port}", "--ServerApp.ip=127.0.0.1",
            "--ServerApp.port_retries=0"]


def server_env(home: Path, extra: dict | None = None) -> dict:
    """The environment of a benchmark server: no hub, its own home, runtime dir and TMPDIR."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "JUPYTER_"))}
    env.update(HOME=str(home), JUPYTER_RUNTIME_DIR=str(home / "runtime"), TMPDIR=str(home / "tmp"),
               JUPYTER_CONFIG_DIR=str(home / "config"))
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    env.update(extra or {})
    return env


def get(url: str, timeout: float = 2.0) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"token {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 120.0, interval: float = 0.01) -> float:
    """Poll ``url`` until it answers 200; the monotonic time it did. Raises if the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before {url} answered")
        try:
            if get(url, timeout=1.0) == 200:
                return time.monotonic()
        except OSError:
            pass
        time.sleep(interval)
    raise TimeoutError(f"{url} did not answer 200 within {timeout} s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
