"""Accounting load: the gateway's one cached query per interval vs a naive per-request sacct.

Run as root where ``scripts/services/slurm start`` has run (Slurm with slurmdbd), with the package
installed::

    python benchmarks/accounting_bench.py --users 10 30 --window 60 --json results.json

For each number of users N, N users open the spawn form every ``--form-every`` seconds and N
running servers ask for their usage every ``--usage-every`` seconds (what the form and a usage
panel do), for ``--window`` seconds, all on one event loop in this process:

- **ours**: each request reads :class:`science_gateway.core.accounting.SlurmAccounting` as the
  hub's routes and the spawner do (``snapshot()``, then the user's usage and allocations), with
  ``--interval`` (the hub's ``SlurmAccounting.interval``);
- **naive**: each request runs its own ``sacct --user=NAME`` and ``sacctmgr show associations
  where user=NAME`` (what a usage widget that asks the scheduler itself does).

Counted: every sacct/sacctmgr run, and slurmdbd's own RPC counters (``sacctmgr show stats``, its
query messages ``DBD_GET_*`` and connection set-ups and ends, before and after the window, less
what the stats call itself adds; other activity on a shared machine adds to both variants alike). Users are the test users of
``scripts/services/slurm`` taken round-robin (the queries are the same whoever asks).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import time

from science_gateway.core.accounting import SlurmAccounting, build_sacct_argv, parse_associations, parse_sacct, slurm_time
from science_gateway.core.commands import run_command

USERS = ["demo", "admin", "student", "astro1", "astro2", "astro3"]
ACCOUNTS = ["astro-2024", "astro-dev", "sg-spent"]
#: slurmdbd RPC types a query causes (the stats call itself is not counted)
QUERY_RPCS = re.compile(r"^\s*(DBD_GET_(?!STATS)\w+|SLURM_PERSIST_INIT|DBD_FINI)\s+\(\s*\d+\)\s+count:(\d+)", re.M)


def dbd_query_rpcs() -> int:
    out = subprocess.run(["sacctmgr", "show", "stats"], capture_output=True, text=True, timeout=30, check=True).stdout
    section = out.split("by message type", 1)[1].split("by user", 1)[0]
    return sum(int(count) for _name, count in QUERY_RPCS.findall(section))


class Naive:
    """Per request: the user's own sacct and sacctmgr (no cache)."""

    def __init__(self):
        self.calls = {"sacct": 0, "sacctmgr": 0}
        self.start = time.strftime("%Y-01-01")

    async def request(self, user: str):
        self.calls["sacct"] += 1
        argv = build_sacct_argv("/usr/bin/sacct", self.start, slurm_time(time.time()))
        argv = [a for a in argv if a != "--allusers"] + [f"--user={user}"]
        jobs = parse_sacct((await run_command(argv, timeout=60)).stdout)
        self.calls["sacctmgr"] += 1
        assoc = await run_command(["/usr/bin/sacctmgr", "-n", "-P", "show", "associations", "where", f"user={user}",
                                   "format=Account,User,GrpTRESMins"], timeout=60)
        parse_associations(assoc.stdout)
        return sum(j.cpu_seconds for j in jobs)


class Ours:
    """Per request: what the hub's usage route and the spawn form read (the shared snapshot)."""

    def __init__(self, interval: float):
        self.accounting = SlurmAccounting(enabled=True, interval=interval)
        self.calls = self.accounting.calls

    async def request(self, user: str):
        snapshot = await self.accounting.snapshot()
        snapshot.allocations(user, ACCOUNTS)
        return snapshot.user_usage(user)["totals"]["all"]["core_hours"]


async def drive(variant, users: int, window: float, form_every: float, usage_every: float) -> dict:
    deadline = time.monotonic() + window
    requests = {"form": 0, "usage": 0}
    latencies = []

    async def person(i: int, kind: str, every: float):
        user = USERS[i % len(USERS)]
        await asyncio.sleep(every * i / users)  # spread over the period, as people are
        while time.monotonic() < deadline:
            began = time.monotonic()
            await variant.request(user)
            latencies.append(time.monotonic() - began)
            requests[kind] += 1
            # the next request, or the end of the window, whichever comes first
            await asyncio.sleep(max(0.0, min(every - (time.monotonic() - began), deadline - time.monotonic())))

    tasks = [person(i, "form", form_every) for i in range(users)]
    tasks += [person(i, "usage", usage_every) for i in range(users)]
    await asyncio.gather(*tasks)
    latencies.sort()
    return {"requests": requests, "p50_ms": round(1000 * latencies[len(latencies) // 2], 1) if latencies else None,
            "p95_ms": round(1000 * latencies[int(len(latencies) * 0.95)], 1) if latencies else None}


def stats_call_rpcs() -> int:
    """What one ``sacctmgr show stats`` adds to the counters itself (subtracted from each window)."""
    first = dbd_query_rpcs()
    return dbd_query_rpcs() - first


async def run(name: str, make, users: int, args) -> dict:
    variant = make()
    own = stats_call_rpcs()
    rpcs_before = dbd_query_rpcs()
    began = time.monotonic()
    result = await drive(variant, users, args.window, args.form_every, args.usage_every)
    minutes = (time.monotonic() - began) / 60
    rpcs = dbd_query_rpcs() - rpcs_before - own
    per_min = {k: round(v / minutes, 1) for k, v in variant.calls.items()}
    row = {"variant": name, "users": users, **result, "commands_per_min": per_min,
           "slurmdbd_query_rpcs_per_min": round(rpcs / minutes, 1),
           "requests_per_min": round(sum(result["requests"].values()) / minutes, 1)}
    print(json.dumps(row), flush=True)
    return row


async def run_all(args) -> list[dict]:
    rows = []
    for users in args.users:
        rows.append(await run("ours", lambda: Ours(args.interval), users, args))
        rows.append(await run("naive", Naive, users, args))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, nargs="+", default=[10, 30])
    parser.add_argument("--window", type=float, default=60, help="seconds per variant and user count")
    parser.add_argument("--interval", type=float, default=30, help="SlurmAccounting.interval of ours")
    parser.add_argument("--form-every", type=float, default=30, help="seconds between a user's form openings")
    parser.add_argument("--usage-every", type=float, default=15, help="seconds between a server's usage reads")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    rows = asyncio.run(run_all(args))
    print("\n| users | variant | requests/min | sacct/min | sacctmgr/min | slurmdbd query RPCs/min | p50 ms | p95 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        c = r["commands_per_min"]
        print(f"| {r['users']} | {r['variant']} | {r['requests_per_min']} | {c['sacct']} | {c['sacctmgr']} | "
              f"{r['slurmdbd_query_rpcs_per_min']} | {r['p50_ms']} | {r['p95_ms']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
