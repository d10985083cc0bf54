"""What scraping the hub's metrics costs a hub API request: p50 with a scraper on vs off, side by side.

One embedded-default hub (the reference config: JupyterHub's metrics and the gateway's in
``/hub/metrics``), with a spawned server so the gateway's families hold samples. A client times
``GET /hub/api/users/NAME`` (an admin's API token) in blocks of ``--block`` requests, alternating
blocks with no scraper ("off") and with a scraper fetching ``/hub/metrics`` every
``--scrape-interval`` seconds ("on"; Prometheus' default is 15 s, the default here 0.2 s is 75 times harsher),
so drifts of a shared machine fall on both alike. Prints p50/p90 of each and the difference (the
target: under 1 ms added at p50), the scrape's own time and size.

    $SG_TEST_VENV/bin/python benchmarks/metrics_bench.py --rounds 10 --json results.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from sgtest.hub import HubSession, RunningHub  # noqa: E402
from sgtest.notebooks import api_token  # noqa: E402


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class Scraper(threading.Thread):
    """Fetches /hub/metrics every ``interval`` s until stopped; records each scrape's time and size."""

    def __init__(self, url, token, interval):
        super().__init__(daemon=True)
        self.url, self.interval = url, interval
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"token {token}"
        self.running = threading.Event()
        self.done = threading.Event()
        self.times, self.size = [], 0

    def run(self):
        while not self.done.is_set():
            if self.running.is_set():
                start = time.perf_counter()
                r = self.http.get(self.url, timeout=30)
                self.times.append(time.perf_counter() - start)
                r.raise_for_status()
                self.size = len(r.content)
            self.done.wait(self.interval)


def time_block(http, url, n):
    times = []
    for _ in range(n):
        start = time.perf_counter()
        r = http.get(url, timeout=30)
        times.append(time.perf_counter() - start)
        r.raise_for_status()
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="off/on block pairs")
    parser.add_argument("--block", type=int, default=100, help="requests per block")
    parser.add_argument("--scrape-interval", type=float, default=0.2, help="seconds between scrapes while on (Prometheus: 15)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as state, RunningHub(Path(state)) as hub:
        admin = HubSession(hub)
        assert admin.login("admin", "admin").status_code == 200
        admin.start_server("admin")  # the gateway's spawn metrics now hold samples
        token = api_token(admin, "admin", note="metrics bench")
        http = requests.Session()
        http.headers["Authorization"] = f"token {token}"
        url = f"{hub.url}/hub/api/users/admin"
        time_block(http, url, args.block)  # warm up
        scraper = Scraper(f"{hub.url}/hub/metrics", token, args.scrape_interval)
        scraper.start()
        off, on = [], []
        for _ in range(args.rounds):
            scraper.running.clear()
            off += time_block(http, url, args.block)
            scraper.running.set()
            on += time_block(http, url, args.block)
        scraper.done.set()
        scraper.join()
        text = requests.get(f"{hub.url}/hub/metrics", headers={"Authorization": f"token {token}"}, timeout=30).text
        admin.stop_server("admin")

    ms = lambda s: round(1000 * s, 2)  # noqa: E731
    result = {
        "requests_each": len(off),
        "scrape_interval_s": args.scrape_interval,
        "off": {"p50_ms": ms(percentile(off, 0.5)), "p90_ms": ms(percentile(off, 0.9))},
        "on": {"p50_ms": ms(percentile(on, 0.5)), "p90_ms": ms(percentile(on, 0.9))},
        "scrapes": len(scraper.times),
        "scrape_p50_ms": ms(statistics.median(scraper.times)) if scraper.times else None,
        "scrape_bytes": scraper.size,
        "gateway_families": sorted({line.split()[2] for line in text.splitlines()
                                    if line.startswith("# HELP science_gateway_") and not line.split()[2].endswith("_created")}),
    }
    result["added_p50_ms"] = round(result["on"]["p50_ms"] - result["off"]["p50_ms"], 2)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
