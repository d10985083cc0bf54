"""The side panel's polling vs rucio-jupyterlab's panel: API calls per minute watching 20 requests.

Ours: a real Jupyter Server (JupyterLab and the gateway, the Rucio backend through a counting proxy)
and headless Chromium with the side panel open on Requests, 20 stage-in requests from tape in
progress while Rucio's transfer daemons run (so what the panel shows keeps changing); every call
the page makes to ``/gateway/api/`` is counted. Then the sidebar is collapsed for
``--hidden-seconds``: the panel must make no call at all.

The peer, side by side on the same 20 datasets and the same Rucio: rucio-jupyterlab 41's panel
polling replayed by ``peer_status.py`` (one call of its frontend per watched dataset every 10 s, as
its polling manager does), through a counting proxy of its own.

    python benchmarks/panel_bench.py [--seconds 120] [--hidden-seconds 60] \
        [--peer-python /var/tmp/peer-venv/bin/python]

Run it with the test venv's Python (the package installed with its extras, Playwright, Chromium);
needs ``scripts/services/rucio start``. Prints one JSON document. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from rucio_bench import Counter, peer_status, start_proxy  # noqa: E402
from sgtest import rucio_transfers as rt  # noqa: E402
from sgtest.browser import CHROMIUM_FLAGS  # noqa: E402
from sgtest.services import require_chromium  # noqa: E402

N_REQUESTS, N_FILES = 20, 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(env: dict, rucio_host: str, root: Path, port: int, token: str) -> subprocess.Popen:
    """JupyterLab with the gateway and the Rucio backend, as a hub-spawned server has them."""
    args, secret_env = rt.server_settings(env, rucio_host=rucio_host, status_refresh_seconds=5)
    argv = [str(Path(sys.executable).parent / "jupyter-lab"), "--no-browser", "--allow-root", f"--port={port}",
            "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
            *args]
    log = open(root / "server.log", "w")
    server = subprocess.Popen(argv, env={**os.environ, **secret_env}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/gateway/api/", headers={"Authorization": f"token {token}"}, timeout=5).ok:
                return server
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    server.kill()
    raise RuntimeError(f"the Jupyter server did not answer: {(root / 'server.log').read_text()[-2000:]}")


async def bench(env, seconds: float, hidden_seconds: float, peer_python: str | None, seed: int = 1) -> dict:
    from playwright.async_api import async_playwright

    admin = rt.client(env)
    dids = [rt.make_dataset(admin, env, n_files=N_FILES, prefix="bench-panel") for _ in range(N_REQUESTS)]
    ours, peers = Counter(), Counter()
    proxy = start_proxy(env["RUCIO_URL"], ours)
    root = Path(tempfile.mkdtemp(prefix="panel-bench-"))
    port, token = free_port(), secrets.token_hex(16)
    server = await asyncio.to_thread(start_server, env, proxy, root, port, token)
    api = f"http://127.0.0.1:{port}/gateway/api"
    auth = {"Authorization": f"token {token}"}
    try:
        for did in dids:
            r = await asyncio.to_thread(requests.post, f"{api}/requests", json={"did": did}, headers=auth, timeout=60)
            r.raise_for_status()
        warm_up = 30 if peer_python else 5  # the peer starts and fills its cache first
        stop = time.monotonic() + warm_up + seconds
        rng = random.Random(seed)

        async def transfers():
            # a few files per round, so the requests keep moving for the whole run
            while time.monotonic() < stop:
                await rt.transfer_round(env, bulk=3)
                await asyncio.sleep(rng.uniform(1, 5))

        mover = asyncio.ensure_future(transfers())
        if peer_python:
            peer_proxy = start_proxy(env["RUCIO_URL"], peers)
            peer = asyncio.ensure_future(peer_status(env, peer_proxy, dids, time.time() + warm_up, seconds, peer_python))
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=require_chromium(), headless=True, args=CHROMIUM_FLAGS)
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            calls: list[tuple[float, str]] = []
            page.on("request", lambda r: calls.append((time.monotonic(), r.url)) if "/gateway/api/" in r.url else None)
            await page.goto(f"http://127.0.0.1:{port}/lab?token={token}")
            tab = page.locator(".jp-SideBar [data-id='science-gateway-panel']")
            await tab.wait_for(timeout=90_000)
            await tab.click()
            await page.locator("#science-gateway-panel .sg-tab[data-tab='Requests']").click()
            await page.locator("#science-gateway-panel .sg-request").first.wait_for(timeout=60_000)
            await asyncio.sleep(max(0.0, warm_up - 5))
            ours.reset()
            peers.reset()
            start = time.monotonic()
            await asyncio.sleep(seconds)
            shown = [u for t, u in calls if t >= start]
            rucio_shown = ours.calls
            await tab.click()  # collapse the sidebar: the panel is hidden
            await page.locator("#science-gateway-panel").wait_for(state="hidden", timeout=10_000)
            hidden_from = time.monotonic()
            await asyncio.sleep(hidden_seconds)
            hidden = [u for t, u in calls if t >= hidden_from]
            states = await page.locator("#science-gateway-panel .sg-request .sg-words").all_inner_texts()
            await browser.close()
        mover.cancel()
        peer_out = await peer if peer_python else None
    finally:
        server.terminate()
        server.wait(30)
        for did in dids:  # expire the stage-in rules at once
            scope, name = did.split(":", 1)
            for rule in admin.list_did_rules(scope, name):
                if rule["rse_expression"] == env["RUCIO_DISK_RSE"]:
                    admin.update_replication_rule(rule["id"], {"lifetime": 0})
    minutes = seconds / 60
    result = {
        "requests": N_REQUESTS, "files_each": N_FILES, "seconds": seconds, "hidden_seconds": hidden_seconds,
        "ours": {"api_calls_per_min": len(shown) / minutes, "api_calls_while_hidden": len(hidden),
                 "rucio_calls_per_min": rucio_shown / minutes,
                 "ready_at_end": sum("ready" in s for s in states)},
    }
    if peer_out is not None:
        result["peer"] = {"api_calls_per_min": peer_out["calls"] / minutes, "rucio_calls_per_min": peers.calls / minutes,
                          "ready_at_end": len(peer_out["ready"])}
        result["ours/peer"] = {k: result["ours"][k] / result["peer"][k] if result["peer"][k] else None
                               for k in ("api_calls_per_min", "rucio_calls_per_min")}
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120, help="how long the panel is watched while shown")
    parser.add_argument("--hidden-seconds", type=float, default=60, help="how long the sidebar stays collapsed")
    parser.add_argument("--peer-python", help="Python of a venv with rucio-jupyterlab==41.0.0, to run the peer side by side")
    args = parser.parse_args()
    with rt.private_token_dir(Path(tempfile.mkdtemp(prefix="panel-bench-tokens-"))):
        env = rt.rucio_env()
        result = asyncio.run(bench(env, args.seconds, args.hidden_seconds, args.peer_python))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("CI", "false")
    main()
