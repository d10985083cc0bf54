"""Light API routes of a user's server while the gateway extension works hard: ours vs a bare server.

One run starts, side by side on this machine:

- a fake Rucio at the HTTP boundary (``tests/sgtest/rucio_http.py``, its own process): 100,000
  datasets matching the search, a dataset of 100,000 files, 20 REPLICATING rules of 100 files;
- a **bare** Jupyter Server (the gateway extension turned off) and **ours** (the same server with
  the extension, ``RucioCatalog`` pointed at the fake, every status call a refresh).

Then, in rounds (the variants' order alternating), a probe process drives each light route with
``--concurrency`` keep-alive connections, closed loop, for ``--seconds``, and records every
request's latency: the bare server; ours idle; ours while a load process (its own process) keeps
one user's heavy calls running back to back: a search paging through the 100,000 datasets 50 at
a time (details on, so every page is 3 Rucio calls, deeper pages longer ``list_dids`` answers),
the file list of the 100,000-file dataset paged 500 at a time (``--load ...,files-all``: the
whole list at once, over and over), and the status of the 20 requests.

``--debug-loop SECONDS`` runs ours with asyncio debug mode and that slow-callback threshold and
prints what asyncio reported (what blocked the event loop); debug mode slows everything, so its
figures are for finding, not for comparing.

    python benchmarks/extension_load.py --rounds 3 --seconds 5
    python benchmarks/extension_load.py --rounds 1 --seconds 5 --debug-loop 0.01
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
import server_procs as sp  # noqa: E402

#: light routes: the bare server has the first two; ours has all
COMMON_ROUTES = ["/api/status", "/api/contents"]
GATEWAY_ROUTES = ["/gateway/api/", "/gateway/api/dask/presets"]
SEARCH = "/gateway/api/datasets?filters=project%3Dbench&limit=50"
FILES = "/gateway/api/datasets/" + quote("bench:big", safe="") + "/files"
STATUS = "/gateway/api/requests"


# -- a small HTTP/1.1 keep-alive client (low overhead, exact timings) -----------------------------


class Connection:
    def __init__(self, port: int):
        self.port = port
        self.reader = self.writer = None

    async def get(self, path: str) -> tuple[int, bytes]:
        """(status, body) of ``GET path`` on this connection (reopened when closed)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nAuthorization: token {sp.TOKEN}\r\n\r\n".encode()
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        if headers.get("transfer-encoding") == "chunked":
            chunks = []
            while True:
                n = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                chunks.append((await self.reader.readexactly(n + 2))[:-2])
                if n == 0:
                    break
            body = b"".join(chunks)
        else:
            body = await self.reader.readexactly(int(headers.get("content-length", 0)))
        if headers.get("connection", "").lower() == "close":
            self.writer.close()
            self.writer = None
        return status, body


def summary(latencies: list[float], seconds: float, errors: int) -> dict:
    ordered = sorted(latencies)

    def pct(p):
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000 if ordered else None

    return {"requests": len(ordered), "errors": errors, "rps": len(ordered) / seconds,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": ordered[-1] * 1000 if ordered else None}


async def probe(port: int, route: str, seconds: float, concurrency: int) -> dict:
    latencies, errors = [], 0
    deadline = time.monotonic() + seconds

    async def worker():
        nonlocal errors
        conn = Connection(port)
        while time.monotonic() < deadline:
            start = time.perf_counter()
            status, _ = await conn.get(route)
            if status == 200:
                latencies.append(time.perf_counter() - start)
            else:
                errors += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return summary(latencies, seconds, errors)


LOAD_KINDS = ("search", "files", "status")
#: all kinds: ``files-all`` asks for the whole 100,000-file list at once, back to back (the worst
#: case; ``files`` pages through it 500 at a time, as a client should)
ALL_KINDS = LOAD_KINDS + ("files-all",)


async def heavy_load(port: int, seconds: float, kinds=LOAD_KINDS) -> dict:
    """One user's heavy calls, each kind back to back: search pages, the big file list, status."""
    done = {"search_pages": 0, "file_pages": 0, "file_lists": 0, "status": 0, "errors": 0, "deepest_offset": 0}
    deadline = time.monotonic() + seconds

    async def pager():
        conn, page = Connection(port), None
        while time.monotonic() < deadline:
            status, body = await conn.get(SEARCH + (f"&page={page}" if page else ""))
            if status != 200:
                done["errors"] += 1
                page = None
                continue
            done["search_pages"] += 1
            page = json.loads(body).get("next")
            offset = int(page.split(".")[-1]) if page else 0  # our token: "scope index.offset"
            done["deepest_offset"] = max(done["deepest_offset"], offset)
            if offset >= 10_000:  # RucioCatalog.max_search_offset: start again
                page = None

    async def file_pager():
        conn, page = Connection(port), None
        while time.monotonic() < deadline:
            status, body = await conn.get(FILES + "?limit=500" + (f"&page={page}" if page else ""))
            if status != 200:
                done["errors"] += 1
                page = None
                continue
            done["file_pages"] += 1
            page = json.loads(body).get("next")  # (a server without paging answers every file, no "next")

    async def repeat(path, key):
        conn = Connection(port)
        while time.monotonic() < deadline:
            status, _ = await conn.get(path)
            done[key if status == 200 else "errors"] += 1

    jobs = {"search": pager, "files": file_pager, "files-all": lambda: repeat(FILES, "file_lists"),
            "status": lambda: repeat(STATUS, "status")}
    await asyncio.gather(*(jobs[kind]() for kind in kinds))
    return done


# -- the run --------------------------------------------------------------------------------------


def run_child(mode: str, port: int, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, mode, str(port), *map(str, args)], stdout=subprocess.PIPE, text=True)


def prepare(work: Path, fake_port: int) -> dict:
    """Folders of the run: the servers' homes and root, the mounted storage with half of each
    request's files present (status looks at the storage)."""
    from sgtest.rucio_http import FakeRucio, backend_traits
    from science_gateway.jupyter_ext.catalog.rucio import deterministic_path

    root = work / "root"
    (root / "notebooks").mkdir(parents=True)
    for i in range(10):
        (root / "notebooks" / f"analysis-{i}.ipynb").write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    mount = work / "mount"
    fake = FakeRucio(datasets=10, big_files=0)  # the same names as the fake's process, small
    for rule in fake.rule_list:
        for j in range(50):
            path = mount / deterministic_path("bench", f"{rule['name']}.f{j:04d}")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x")
    traits = backend_traits(f"http://127.0.0.1:{fake_port}", str(mount), fake)
    return {"root": root, "rucio": traits}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one probe window")
    parser.add_argument("--concurrency", type=int, default=4, help="probe connections per window")
    parser.add_argument("--port-base", type=int, default=21100)
    parser.add_argument("--debug-loop", type=float, default=None, metavar="SECONDS",
                        help="run ours with asyncio debug mode and this slow-callback threshold")
    parser.add_argument("--load", default=",".join(LOAD_KINDS), type=lambda text: text.split(","),
                        help=f"the heavy calls to run, comma-separated, of {', '.join(ALL_KINDS)} (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="write every window's figures here")
    args = parser.parse_args(argv)

    fake_port, bare_port, ours_port = args.port_base, args.port_base + 1, args.port_base + 2
    work = Path(tempfile.mkdtemp(prefix="sg-extload-"))
    env_fake = {**os.environ, "PYTHONPATH": str(HERE.parent / "tests")}
    fake = subprocess.Popen([sys.executable, "-m", "sgtest.rucio_http", "--port", str(fake_port)], env=env_fake,
                            stdout=subprocess.PIPE, text=True)
    paths = prepare(work, fake_port)
    procs, logs = {}, {}
    try:
        fake.stdout.readline()  # "fake Rucio on ..." once it listens
        for name, port, gateway in (("bare", bare_port, False), ("ours", ours_port, True)):
            home = work / name
            home.mkdir()
            extra = {"GatewayExtension": {"catalog_class": "science_gateway.jupyter_ext.catalog.rucio.RucioCatalog",
                                          "examples_dir": ""},
                     "RucioCatalog": paths["rucio"]} if gateway else {}
            config = sp.write_config(home / "config.json", gateway=gateway, root_dir=paths["root"], extra=extra)
            logs[name] = open(home / "server.log", "w")
            debug = args.debug_loop if gateway else None
            procs[name] = subprocess.Popen(sp.server_argv(config, port, debug_threshold=debug), env=sp.server_env(home),
                                           stdout=logs[name], stderr=subprocess.STDOUT)
        for name, port in (("bare", bare_port), ("ours", ours_port)):
            sp.wait_until_up(f"http://127.0.0.1:{port}/api/status", procs[name])
        # the first file list and search fill our caches, as in a server that has run a while
        for path in (FILES, SEARCH, STATUS):
            status = sp.get(f"http://127.0.0.1:{ours_port}{path}", timeout=120)
            if status != 200:
                raise RuntimeError(f"warm-up GET {path} answered {status}: see {work}/ours/server.log")
        results = []
        variants = [("bare", bare_port, False), ("ours idle", ours_port, False), ("ours under load", ours_port, True)]
        for round_no in range(args.rounds):
            order = variants if round_no % 2 == 0 else variants[::-1]
            # route by route, the three variants' windows one after another: the machine's other
            # load (this is a shared machine) changes less between the windows compared
            for route in COMMON_ROUTES + GATEWAY_ROUTES:
                for name, port, loaded in order:
                    probed = route if name != "bare" or route in COMMON_ROUTES else "/api/status"
                    load = run_child("_load", port, args.seconds + 1.5, ",".join(args.load)) if loaded else None
                    if load is not None:
                        time.sleep(1.0)
                    out = json.loads(run_child("_probe", port, probed, args.seconds, args.concurrency).communicate()[0])
                    load_average = os.getloadavg()[0]
                    results.append({"round": round_no, "variant": name, "route": route, "probed": probed,
                                    "loadavg": load_average, **out})
                    line = (f"round {round_no} {route:26s} {name:16s} {out['rps']:7.0f} req/s  p50 {out['p50_ms']:6.1f} ms"
                            f"  p99 {out['p99_ms']:6.1f} ms  errors {out['errors']}  (load average {load_average:.1f})")
                    if load is not None:
                        heavy = json.loads(load.communicate()[0])
                        results[-1]["load"] = heavy
                        line += "\n" + " " * 8 + "load: " + ", ".join(f"{k} {v}" for k, v in heavy.items())
                    print(line, flush=True)
        report(results)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    finally:
        for process in procs.values():
            sp.stop(process)
        sp.stop(fake)
        for log in logs.values():
            log.close()
    if args.debug_loop:
        slow_callbacks(work / "ours" / "server.log")
    print(f"logs: {work}")


def report(results: list[dict]) -> None:
    """Per route: the median over rounds of each variant's figures, and of the ratio of ours under
    load to the bare server within each round (the bare server's /api/status for our own routes)."""
    def of(variant, route, round_no=None):
        return [r for r in results if r["variant"] == variant and r["route"] == route
                and (round_no is None or r["round"] == round_no)]

    def med(variant, route, key):
        return statistics.median(r[key] for r in of(variant, route))

    print("\nmedians over rounds; load/bare: the median of each round's ratio (gateway routes: against bare /api/status)")
    print(f"{'route':26s} {'bare req/s':>10s} {'idle req/s':>10s} {'load req/s':>10s} {'load/bare':>9s}"
          f" {'p50 ms bare/idle/load':>22s} {'p99 ms bare/idle/load':>22s}")
    rounds = sorted({r["round"] for r in results})
    for route in COMMON_ROUTES + GATEWAY_ROUTES:
        ratio = statistics.median(of("ours under load", route, n)[0]["rps"] / of("bare", route, n)[0]["rps"] for n in rounds)
        p50 = "/".join(f"{med(v, route, 'p50_ms'):.1f}" for v in ("bare", "ours idle", "ours under load"))
        p99 = "/".join(f"{med(v, route, 'p99_ms'):.1f}" for v in ("bare", "ours idle", "ours under load"))
        print(f"{route:26s} {med('bare', route, 'rps'):10.0f} {med('ours idle', route, 'rps'):10.0f}"
              f" {med('ours under load', route, 'rps'):10.0f} {ratio:9.2f} {p50:>22s} {p99:>22s}")


def slow_callbacks(log: Path) -> None:
    """What asyncio debug mode reported as slow in our server, grouped by the code it names."""
    text = log.read_text(errors="replace")
    found = re.findall(r"Executing (.*?) took (\d+\.\d+) seconds", text)
    print(f"\nasyncio debug: {len(found)} slow callbacks in ours")
    groups = {}
    for what, took in found:
        where = re.sub(r"0x[0-9a-f]+", "0x..", what)[:300]
        groups.setdefault(where, []).append(float(took))
    for where, took in sorted(groups.items(), key=lambda kv: -sum(kv[1]))[:15]:
        print(f"  {len(took):4d} x, max {max(took) * 1000:7.1f} ms: {where}")
    stalls = re.findall(r"LOOP STALL (\d+) ms in (.*)", text)
    print(f"\nwatchdog: {len(stalls)} stalls of the event loop in ours, by where the loop thread was")
    groups = {}
    for ms, where in stalls:
        groups.setdefault(where, []).append(int(ms))
    for where, ms in sorted(groups.items(), key=lambda kv: -len(kv[1]))[:15]:
        print(f"  {len(ms):4d} x, max {max(ms):6d} ms: {where}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_probe":
        port, route, seconds, concurrency = int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
        print(json.dumps(asyncio.run(probe(port, route, seconds, concurrency))))
    elif len(sys.argv) > 1 and sys.argv[1] == "_load":
        print(json.dumps(asyncio.run(heavy_load(int(sys.argv[2]), float(sys.argv[3]), sys.argv[4].split(",")))))
    else:
        main()
