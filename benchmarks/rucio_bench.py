"""Rucio benchmark: the gateway's catalogue backend vs the floor (one direct ``list_dids``).

Runs against the local Rucio stack (``scripts/services/rucio start``), through a small counting
proxy in front of Rucio that counts the calls and bytes that reach it. See benchmarks/README.md.

    python benchmarks/rucio_bench.py populate          # 100,000 datasets in scope 'bench' (once)
    python benchmarks/rucio_bench.py search [--runs 10]
    python benchmarks/rucio_bench.py status [--seconds 120]

Run it with a Python that has the package installed with the ``rucio`` extra (e.g. the test venv).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tornado import httpclient, httpserver, web
from tornado.netutil import bind_sockets

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from sgtest import rucio_transfers as rt  # noqa: E402

from science_gateway.jupyter_ext.catalog.rucio import RucioCatalog  # noqa: E402

N_DATASETS = 100_000
SCOPE = "bench"


class Counter:
    def __init__(self):
        self.calls = 0
        self.bytes = 0
        self.paths = []

    def reset(self):
        self.calls, self.bytes, self.paths = 0, 0, []


class ProxyHandler(web.RequestHandler):
    """Forwards every request to Rucio, counting calls and response bytes."""

    SUPPORTED_METHODS = ("GET", "POST", "PUT", "DELETE")

    def initialize(self, upstream, counter):
        self.upstream = upstream
        self.counter = counter

    async def _forward(self):
        headers = {k: v for k, v in self.request.headers.get_all() if k.lower() not in ("host", "content-length")}
        body = self.request.body if self.request.method in ("POST", "PUT") else None
        if self.request.method in ("POST", "PUT", "DELETE") and body is None:
            body = b""
        req = httpclient.HTTPRequest(
            self.upstream + self.request.uri, method=self.request.method, headers=headers,
            body=body if self.request.method != "DELETE" or body else None,
            allow_nonstandard_methods=True, request_timeout=300, decompress_response=False,
        )
        try:
            resp = await httpclient.AsyncHTTPClient().fetch(req, raise_error=False)
        except Exception as e:
            raise web.HTTPError(502, str(e)) from None
        self.counter.calls += 1
        self.counter.bytes += len(resp.body or b"")
        self.counter.paths.append(self.request.path)
        self.set_status(resp.code, resp.reason)
        self.clear_header("Content-Type")
        for k, v in resp.headers.get_all():
            if k.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                self.set_header(k, v)
        if resp.body:
            self.write(resp.body)

    async def get(self, *a):
        await self._forward()

    post = put = delete = get


def start_proxy(upstream: str, counter: Counter) -> str:
    app = web.Application([(r"/(.*)", ProxyHandler, {"upstream": upstream, "counter": counter})])
    sockets = bind_sockets(0, "127.0.0.1")
    server = httpserver.HTTPServer(app)
    server.add_sockets(sockets)
    return f"http://127.0.0.1:{sockets[0].getsockname()[1]}"


def _populate_chunk(env, names: list[str]) -> None:
    """One chunk of datasets with their metadata; a chunk that is there already is completed."""
    from rucio.common.exception import DataIdentifierAlreadyExists

    admin = rt.client(env)
    try:
        admin.add_dids([{"scope": SCOPE, "name": n, "type": "DATASET", "meta": {"datatype": "RAW", "project": "bench"}} for n in names])
    except DataIdentifierAlreadyExists:  # an interrupted run made it (add_dids is one transaction)
        pass
    admin.set_dids_metadata_bulk([{"scope": SCOPE, "name": n, "meta": {"sample": "bench"}} for n in names])


def populate(env, chunk: int = 1000):
    """100,000 datasets with a built-in (datatype, project) and a free-form (sample) key.

    In chunks, one at a time (chunks in parallel gain nothing: on 2 cores they took over
    gunicorn's 120 s worker timeout); a chunk whose last dataset has its free-form key is skipped,
    so an interrupted run can be started again."""
    admin = rt.client(env)
    try:
        admin.add_scope("root", SCOPE)
    except Exception:  # exists
        pass
    done = set(admin.list_dids(SCOPE, [{"name": "bench.*", "sample": "bench"}], did_type="dataset"))
    chunks = [[f"bench.{j:06d}" for j in range(i, min(i + chunk, N_DATASETS))] for i in range(0, N_DATASETS, chunk)]
    todo = [c for c in chunks if c[-1] not in done]
    if not todo:
        print(f"{N_DATASETS} datasets already in scope {SCOPE}")
        return
    start = time.monotonic()
    for n, names in enumerate(todo, 1):
        _populate_chunk(env, names)
        print(f"  {n} of {len(todo)} chunks of {chunk} datasets, {time.monotonic() - start:.0f} s", flush=True)


def _floor_client(env, host):
    from rucio.client import Client

    return Client(rucio_host=host, auth_host=env["RUCIO_AUTH_URL"], account=env["RUCIO_ACCOUNT"],
                  auth_type="userpass", creds={"username": env["RUCIO_ACCOUNT"], "password": env["RUCIO_PASSWORD"]})


def _catalog(env, host, **extra):
    return RucioCatalog(
        rucio_host=host, auth_host=env["RUCIO_AUTH_URL"], auth_type="userpass",
        account=env["RUCIO_ACCOUNT"], password=env["RUCIO_PASSWORD"],
        rse=env["RUCIO_DISK_RSE"], mount_path=env["RUCIO_MOUNT_PATH"],
        allowed_scopes=env["RUCIO_SCOPES"].split(",") + [SCOPE], **extra,
    )


async def peer_search(env, proxy: str, counter: Counter, filters: dict, runs: int, peer_python: str) -> dict:
    """rucio-jupyterlab 41's search through the same proxy (benchmarks/peer_search.py in its venv)."""
    args = {"url": proxy, "auth_url": env["RUCIO_AUTH_URL"], "account": env["RUCIO_ACCOUNT"],
            "password": env["RUCIO_PASSWORD"], "scope": SCOPE, "runs": runs,
            "filters": ", ".join(f"{k}={v}" for k, v in filters.items())}
    counter.reset()
    proc = await asyncio.create_subprocess_exec(
        peer_python, str(HERE / "peer_search.py"), json.dumps(args),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 900)
    if proc.returncode:
        raise RuntimeError(f"peer search failed: {err.decode()[-2000:]}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    return {"median_ms": 1000 * statistics.median(result["times"]), "calls": counter.calls / runs,
            "bytes": counter.bytes / runs, "rows": result["rows"]}


async def _cold(catalog: RucioCatalog) -> None:
    """Empty the backend's details caches, once no fetch of an earlier search is on its way."""
    caches = (catalog._columns, catalog._replicas, catalog._freeform)
    fetches = {task for cache in caches for task in cache.fetches.values()}
    if fetches:
        await asyncio.gather(*fetches, return_exceptions=True)
    for cache in caches:
        cache.clear()


#: the variants timed for each filter: (label, details, cache) and what each call looks like
SEARCH_VARIANTS = [
    ("ours_no_details", False, "warm"),
    # the widget's first answer on a cold cache: sizes, availability, built-in keys (partial=True)
    ("ours_cold_partial", True, "cold-partial"),
    # the widget's page complete: its partial answer, then the same search again (free-form keys)
    ("ours_cold_then_complete", True, "cold-partial-complete"),
    # the Python API's default (details, not partial) on a cold cache: one call that waits for all
    ("ours_cold_complete", True, "cold"),
    ("ours_cached", True, "warm"),
]


async def bench_search(env, runs: int, peer_python: str | None = None) -> dict:
    """Floor and ours, interleaved run by run (each run times every variant once), so a change of
    the machine's load during the benchmark touches every variant alike."""
    counter = Counter()
    proxy = start_proxy(env["RUCIO_URL"], counter)
    floor_client = _floor_client(env, proxy)
    catalog = _catalog(env, proxy)
    results = {"load_average": os.getloadavg()}
    for label, filters in [("built-in key (datatype=RAW)", {"datatype": "RAW"}), ("free-form key (sample=bench)", {"sample": "bench"})]:
        times = collections.defaultdict(list)
        calls, sizes = {}, {}

        async def floor():
            rows = await asyncio.to_thread(RucioCatalog._list_dids, floor_client, SCOPE, {"name": "*", **filters}, "dataset", 50)
            assert len(rows) == 50

        async def before():
            """The calls the backend made for a cold page with details until 2026-12-04: list_dids
            for 51 rows, then plugin=ALL metadata and the dataset replicas at once."""
            rows = await asyncio.to_thread(RucioCatalog._list_dids, floor_client, SCOPE, {"name": "*", **filters}, "dataset", 51)
            dids = [{"scope": r["scope"], "name": r["name"]} for r in rows[:50]]
            await asyncio.gather(
                asyncio.to_thread(lambda: list(floor_client.get_metadata_bulk(dids, plugin="ALL"))),
                asyncio.to_thread(lambda: list(floor_client.list_dataset_replicas_bulk(dids))),
            )

        async def ours(details, cache):
            query = catalog.query("*", filters, 50, scope=SCOPE, details=details, partial=cache.startswith("cold-partial"))
            page = await catalog.search(query)
            if cache == "cold-partial-complete":
                page = await catalog.search(catalog.query("*", filters, 50, scope=SCOPE))
            assert len(page.datasets) == 50 and page.next
            if cache in ("cold", "cold-partial-complete", "warm") and details:
                assert not any(d.metadata_pending for d in page.datasets)
                assert all(d.metadata.get("sample") == d.metadata.get("project") == "bench" for d in page.datasets)

        for details in (False, True):  # warm up: login in each executor thread, the RSE list
            for _ in range(3):
                await catalog.search(catalog.query("*", filters, 50, scope=SCOPE, details=details))
        for run in range(runs):
            for variant, details, cache in [("floor", None, None), ("before_cold", None, None)] + SEARCH_VARIANTS:
                if cache and cache.startswith("cold"):
                    await _cold(catalog)
                counter.reset()
                t = time.perf_counter()
                await (floor() if variant == "floor" else before() if variant == "before_cold" else ours(details, cache))
                times[variant].append(time.perf_counter() - t)
                if cache == "cold-partial":
                    await _cold(catalog)  # its free-form fetch goes on after the answer: off the clock, counted
                calls[variant], sizes[variant] = counter.calls, counter.bytes
        row = {}
        for variant, values in times.items():
            row[variant] = {"median_ms": 1000 * statistics.median(values), "calls": calls[variant], "bytes": sizes[variant]}
            if variant != "floor":
                row[f"{variant}/floor"] = row[variant]["median_ms"] / row["floor"]["median_ms"]
        if peer_python:
            row["peer"] = await peer_search(env, proxy, counter, filters, max(1, runs // 3), peer_python)
            row["peer/floor"] = row["peer"]["median_ms"] / row["floor"]["median_ms"]
        results[label] = row
    results["load_average_after"] = os.getloadavg()
    await catalog.close()
    return results


async def peer_status(env, proxy: str, dids: list[str], start_at: float, seconds: float, peer_python: str) -> dict:
    """rucio-jupyterlab 41's polling of the same datasets through its own proxy (benchmarks/peer_status.py)."""
    args = {"url": proxy, "auth_url": env["RUCIO_AUTH_URL"], "account": env["RUCIO_ACCOUNT"],
            "password": env["RUCIO_PASSWORD"], "rse": env["RUCIO_DISK_RSE"], "mount_path": env["RUCIO_MOUNT_PATH"],
            "dids": dids, "start_at": start_at, "seconds": seconds, "interval": 10}
    proc = await asyncio.create_subprocess_exec(
        peer_python, str(HERE / "peer_status.py"), json.dumps(args),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"peer status failed: {err.decode()[-2000:]}")
    return json.loads(out.decode().strip().splitlines()[-1])


def _lags(ok_at: dict, seen_at: dict) -> dict:
    lags = [(seen_at[i] - ok_at[i]).total_seconds() for i in ok_at if i in seen_at]
    return {"ok_noticed_median_s": statistics.median(lags) if lags else None,
            "ok_noticed_max_s": max(lags) if lags else None, "ok_noticed": len(lags)}


async def bench_status(env, seconds: float, n_requests: int = 20, n_files: int = 100, poll: float = 1.0,
                       peer_python: str | None = None, refresh: float = 5.0, seed: int = 1) -> dict:
    """20 requests of 100 files staged, a client polling status every second, transfers landing.

    With ``peer_python`` the peer watches the same datasets at the same time, through a proxy of its
    own, so both see the same rules turn OK.
    """
    admin = rt.client(env)
    dids = [rt.make_dataset(admin, env, n_files=n_files, prefix="bench-status") for _ in range(n_requests)]
    counter = Counter()
    proxy = start_proxy(env["RUCIO_URL"], counter)
    catalog = _catalog(env, proxy, status_refresh_seconds=refresh)
    requests = [await catalog.stage(did) for did in dids]
    ids = {r.id for r in requests}
    ok_at, seen_at = {}, {}  # rule id -> wall-clock UTC (Rucio's updated_at, when our status showed it)
    warm_up = 30 if peer_python else 0  # seconds for the peer to start and fill its cache first
    stop = time.monotonic() + warm_up + seconds
    rng = random.Random(seed)

    async def transfers():
        # one dataset's worth of transfers per round, so rules turn OK throughout the run
        while time.monotonic() < stop - 5:
            await rt.transfer_round(env, bulk=n_files)
            for rule in admin.list_replication_rules({"account": env["RUCIO_ACCOUNT"], "rse_expression": env["RUCIO_DISK_RSE"]}):
                if rule["id"] in ids and rule["state"] == "OK" and rule["id"] not in ok_at:
                    ok_at[rule["id"]] = rule["updated_at"]  # when the finisher made it OK
            # a random pause, so rules do not turn OK in step with either side's polling period
            await asyncio.sleep(rng.uniform(1, 5))

    async def client():
        while time.monotonic() < stop:
            for r in await catalog.status():
                if r.id in ids and r.state == "ready" and r.id not in seen_at:
                    seen_at[r.id] = catalog.utcnow()
            await asyncio.sleep(poll)

    peer_counter = Counter()
    if peer_python:
        peer_proxy = start_proxy(env["RUCIO_URL"], peer_counter)
        peer = asyncio.ensure_future(peer_status(env, peer_proxy, dids, time.time() + warm_up, seconds, peer_python))
    else:
        peer = asyncio.ensure_future(asyncio.sleep(0))  # None: no peer
    await catalog.status()  # the server has been running: its snapshot exists
    await asyncio.sleep(warm_up)
    counter.reset()
    peer_counter.reset()
    started = time.monotonic()
    _, _, peer_out = await asyncio.gather(transfers(), client(), peer)
    minutes = (time.monotonic() - started) / 60

    def traffic(c: Counter) -> dict:  # taken before the clean-up below adds its own calls
        kinds = collections.Counter(
            "/".join(p.rstrip("/").split("/")[:2]) + ("/..." if p.rstrip("/").count("/") > 1 else "") for p in c.paths
        )
        return {"rucio_calls_per_min": c.calls / minutes, "rucio_bytes_per_min": c.bytes / minutes,
                "calls_by_kind": dict(kinds.most_common())}

    result = {
        "requests": n_requests, "files_each": n_files, "seconds": seconds, "client_poll_s": poll,
        "status_refresh_seconds": refresh, "rules_turned_ok": len(ok_at), "ours": {**traffic(counter), **_lags(ok_at, seen_at)},
    }
    if peer_out is not None:
        rule_of = {r.did: r.id for r in requests}
        peer_seen = {rule_of[did]: datetime.datetime.fromisoformat(t) for did, t in peer_out["ready"].items()}
        result["peer"] = {**traffic(peer_counter), **_lags(ok_at, peer_seen)}
        result["ours/peer"] = {k: result["ours"][k] / result["peer"][k] for k in ("rucio_calls_per_min", "rucio_bytes_per_min")}
    for r in requests:
        await catalog.cancel(r.id)
    await catalog.close()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["populate", "search", "status"])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--status-refresh-seconds", type=float, default=5.0, help="RucioCatalog.status_refresh_seconds (status)")
    parser.add_argument("--peer-python", help="Python of a venv with rucio-jupyterlab==41.0.0, to run the peer side by side")
    args = parser.parse_args()
    with rt.private_token_dir(Path(tempfile.mkdtemp(prefix="rucio-bench-"))):  # a token cache of this run's own
        env = rt.rucio_env()
        if args.what == "populate":
            populate(env)
            return
        if args.what == "search":
            result = asyncio.run(bench_search(env, args.runs, args.peer_python))
        else:
            result = asyncio.run(bench_status(env, args.seconds, peer_python=args.peer_python, refresh=args.status_refresh_seconds))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("CI", "false")
    main()
