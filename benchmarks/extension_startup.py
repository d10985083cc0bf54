"""The gateway extension's own start-up cost: a Jupyter server with it vs the same server without.

Each start is a new local process (no Slurm: the spawn itself is measured in ``slurm_poll.py``),
timed from ``Popen`` to the first 200 of ``GET /api/status`` (polled every 10 ms). Both variants
run the same ``python -m jupyter_server`` with the same config and a fresh home each time (a
user's first start: ours copies the example notebooks into it); ours also has the environment of
a hub-spawned server, so its token keeper starts and fetches a token from a small stand-in for the
hub's ``/hub/api/gateway/token`` route served by this script. The order alternates (bare first,
then ours first), ``--starts`` of each; the median and each start are reported.

    python benchmarks/extension_startup.py --starts 10
    python benchmarks/extension_startup.py --starts 3 --importtime   # where ours spends its start

After the starts it times the extension's own steps in-process (``--steps N`` processes): the
import of its modules, the settings check, the catalogue, the examples copy.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import server_procs as sp  # noqa: E402


class FakeHubToken(BaseHTTPRequestHandler):
    """``GET /hub/api/gateway/token``: what the hub's route answers (see science_gateway.hub.api)."""

    fetched = 0

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).fetched += 1
        body = json.dumps({"access_token": "bench-access-token", "expires_at": time.time() + 3600}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def start_once(work: Path, name: str, gateway: bool, port: int, hub_url: str, importtime: bool) -> float:
    home = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work))
    root = home / "home"
    root.mkdir()
    config = sp.write_config(home / "config.json", gateway=gateway, root_dir=root)
    env = sp.server_env(home, {
        "JUPYTERHUB_API_URL": f"{hub_url}/hub/api", "JUPYTERHUB_USER": "bench",
        "JUPYTERHUB_API_TOKEN": "bench-server-token",
    })
    argv = sp.server_argv(config, port)
    if importtime:
        argv.insert(1, "-X")
        argv.insert(2, "importtime")
    log = open(home / "server.log", "w")
    started = time.monotonic()
    process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        answered = sp.wait_until_up(f"http://127.0.0.1:{port}/api/status", process)
    finally:
        sp.stop(process)
        log.close()
    if gateway and not (root / "examples").is_dir():
        raise RuntimeError(f"ours did not copy the examples into {root} (see {home}/server.log)")
    return answered - started


#: in a child process: what the extension itself does at start, step by step, after the imports a
#: bare server makes anyway (printed as JSON, milliseconds)
OWN_STEPS = """
import json, os, tempfile, time
import jupyter_server.serverapp, jupyterlab, jupyter_server_proxy  # a bare server imports these too
t = [time.perf_counter()]
from science_gateway.core.typed import check_settings
from science_gateway.jupyter_ext.app import GatewayExtension
from science_gateway.jupyter_ext.tokens import TokenKeeper
t.append(time.perf_counter())
ext = GatewayExtension()
check_settings(ext.config, (type(ext), ext.catalog_class, TokenKeeper), "bench")
t.append(time.perf_counter())
ext.catalog.display_name
t.append(time.perf_counter())
home = tempfile.mkdtemp()
ext.copy_examples(home)
t.append(time.perf_counter())
assert os.path.isdir(os.path.join(home, "examples"))
steps = ("import", "settings check", "catalogue", "examples copy")
print(json.dumps({k: (b - a) * 1000 for k, a, b in zip(steps, t, t[1:])}))
"""


def own_steps(runs: int) -> None:
    """The median time of each of the extension's own start-up steps, over ``runs`` processes."""
    found = [json.loads(subprocess.run([sys.executable, "-c", OWN_STEPS], capture_output=True, text=True, check=True).stdout)
             for _ in range(runs)]
    print(f"\nthe extension's own steps, median of {runs} processes (ms):")
    for step in found[0]:
        print(f"  {step:16s} {statistics.median(f[step] for f in found):7.1f}")
    print(f"  {'total':16s} {statistics.median(sum(f.values()) for f in found):7.1f}")


def import_costs(work: Path) -> None:
    """The slowest imports of ours that the bare server does not make (from ``-X importtime``)."""
    costs = {}
    for log in work.glob("*/server.log"):
        variant = log.parent.name.split("-")[0]
        for self_us, cumulative_us, module in re.findall(r"import time:\s+(\d+) \|\s+(\d+) \|( *\S+)", log.read_text()):
            costs.setdefault(variant, {}).setdefault(module.strip(), []).append(int(cumulative_us))
    bare, ours = costs.get("bare", {}), costs.get("ours", {})
    extra = {m: statistics.median(v) for m, v in ours.items() if m not in bare}
    print("\nimports only ours makes (median cumulative ms, top 15):")
    for module, us in sorted(extra.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {us / 1000:8.1f}  {module}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--starts", type=int, default=10, help="starts of each variant")
    parser.add_argument("--port", type=int, default=21110)
    parser.add_argument("--importtime", action="store_true", help="run with -X importtime and list ours' extra imports")
    parser.add_argument("--steps", type=int, default=10, metavar="N",
                        help="then time the extension's own start-up steps in N processes (0: skip)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="sg-extstart-"))
    hub = ThreadingHTTPServer(("127.0.0.1", 0), FakeHubToken)
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    hub_url = f"http://127.0.0.1:{hub.server_address[1]}"
    times = {"bare": [], "ours": []}
    try:
        for i in range(args.starts):
            order = [("bare", False), ("ours", True)] if i % 2 == 0 else [("ours", True), ("bare", False)]
            for name, gateway in order:
                seconds = start_once(work, name, gateway, args.port, hub_url, args.importtime)
                times[name].append(seconds)
                print(f"start {i} {name}: {seconds:.3f} s", flush=True)
    finally:
        hub.shutdown()
    bare, ours = statistics.median(times["bare"]), statistics.median(times["ours"])
    pairs = statistics.median(o / b for o, b in zip(times["ours"], times["bare"]))
    print(f"\nmedian of {args.starts}: bare {bare:.3f} s, ours {ours:.3f} s, ours/bare {ours / bare:.3f}"
          f" (median of the {args.starts} side-by-side pairs' ratios: {pairs:.3f})")
    print("bare:", ", ".join(f"{t:.2f}" for t in times["bare"]))
    print("ours:", ", ".join(f"{t:.2f}" for t in times["ours"]))
    print(f"token fetches by ours' token keeper: {FakeHubToken.fetched}")
    if args.importtime:
        import_costs(work)
    if args.steps:
        own_steps(args.steps)
    if args.json:
        args.json.write_text(json.dumps(times, indent=1))
    print(f"logs: {work}")


if __name__ == "__main__":
    main()
