"""Stock batchspawner CondorSpawner vs Science Gateway's on the same HTCondor pool: schedd queries, spawn time.

Run as root on a machine where ``scripts/services/htcondor start`` has run, with the package (extras
``condor``, ``test``) installed in a world-readable venv and configurable-http-proxy on PATH::

    /var/tmp/venv/bin/python benchmarks/condor_bench.py --servers 10 30 --spawns 10

For each variant a real JupyterHub starts servers for N users at once, waits until all answer,
then counts schedd job queries for ``--window`` seconds: stock batchspawner runs one ``condor_q``
per server per poll (counted by a logging wrapper of ``condor_q``, run through ``sudo -E -u USER``
as batchspawner does); ours asks the schedd once per ``CondorQueuePoller.interval`` for all servers
through the Python bindings (counted from the hub's debug log line of each query). Then it times
``--spawns`` spawns one after another (request to ``/user/NAME/api/status`` answering 200). Both
variants use the same ``Spawner.poll_interval`` (30 s by default), 1 core and 1 GiB per server.
Users ``sgbench01``... are created as unix accounts when missing.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchlib import (
    CORES,
    MEMORY_GB,
    PARTITION,
    WALLTIME_HOURS,
    Bench,
    add_run_arguments,
    bench_service,
    bench_users,
    ensure_users,
    load_average,
    merge_config,
)
from sgtest.commands import FakeCommand
from sgtest.hub import RunningHub, free_port
from sgtest.services import SERVICES_DIR, parse_env

#: the debug line ours logs for each schedd query (spawners/poller.py)
OURS_QUERY_LINE = "the schedd query:"


def condor_env() -> dict:
    path = SERVICES_DIR / "htcondor.env"
    if not path.is_file():
        sys.exit(f"{path} does not exist: run scripts/services/htcondor install && scripts/services/htcondor start")
    return parse_env(path.read_text())


def variant_config(variant: str, condor: dict, condor_q: FakeCommand, users, token, prefix, poll) -> dict:
    server = [f"{prefix}/bin/jupyterhub-singleuser"]
    hub = {
        "JupyterHub": {
            "authenticator_class": "dummy",
            "cleanup_servers": True,
            "load_groups": {"bench": {"users": users}},
            **bench_service(token),
        },
        "Authenticator": {"allowed_users": users},
        "Spawner": {"poll_interval": poll, "http_timeout": 300, "start_timeout": 600, "cmd": server,
                    "default_url": "/lab"},
    }
    bin_dir = condor["CONDOR_BIN"]
    if variant == "stock":
        spawner = {
            "JupyterHub": {"spawner_class": "batchspawner.CondorSpawner"},
            # batchspawner runs its commands with the job's environment: the pool's config must be in it
            "Spawner": {"env_keep": ["PATH", "PYTHONPATH", "VIRTUAL_ENV", "LANG", "LC_ALL", "CONDOR_CONFIG"]},
            "CondorSpawner": {
                "batchspawner_singleuser_cmd": f"{prefix}/bin/batchspawner-singleuser",
                "batch_submit_cmd": f"{bin_dir}/condor_submit",
                # batchspawner's own query, through the logging wrapper
                "batch_query_cmd": f'{condor_q.path} {{job_id}} -format "%s, " JobStatus -format "%s" RemoteHost '
                                   '-format "\\n" True',
                "batch_cancel_cmd": f"{bin_dir}/condor_rm {{job_id}}",
                "req_memory": str(MEMORY_GB * 1024),
                "req_nprocs": str(CORES),
            },
        }
    elif variant == "ours":
        spawner = {
            "JupyterHub": {"spawner_class": "science-gateway-condor", "log_level": "DEBUG"},
            "CondorSpawner": {"python_prefix": prefix, "job_name": f"sgbench-{secrets.token_hex(3)}",
                              "condor_submit_path": f"{bin_dir}/condor_submit",
                              "condor_rm_path": f"{bin_dir}/condor_rm"},
            "CondorQueuePoller": {"interval": poll, "fast_interval": 0.5},
            "ResourcePolicy": {"groups": {"bench": {"partitions": {PARTITION: {
                "max_cores": CORES, "max_memory_gb": MEMORY_GB, "max_walltime_hours": WALLTIME_HOURS}}}}},
        }
    else:
        raise ValueError(f"variant must be stock or ours, not {variant!r}")
    return merge_config(hub, spawner)


def query_count(variant: str, hub: RunningHub, condor_q: FakeCommand) -> int:
    if variant == "stock":
        return condor_q.calls()
    return sum(OURS_QUERY_LINE in line for line in hub.log_text().splitlines())


def run_variant(variant, args, users, condor, workdir: Path) -> dict:
    wrappers = workdir / f"wrap-{variant}"
    condor_q = FakeCommand(wrappers, "condor_q", real=f"{condor['CONDOR_BIN']}/condor_q")
    token = secrets.token_hex(16)
    config = variant_config(variant, condor, condor_q, users, token, args.prefix, args.poll_interval)
    config["JupyterHub"]["hub_port"] = free_port()
    result = {"variant": variant, "load": {}, "spawn_times": [], "load_average": load_average()}
    env = {"CONDOR_CONFIG": condor["CONDOR_CONFIG"]}
    with RunningHub(workdir / f"hub-{variant}", config=config, env=env, stock=variant == "stock") as hub:
        bench = Bench(hub, token)
        running = 0
        for target in sorted(args.servers):
            batch = users[running:target]
            with ThreadPoolExecutor(len(batch)) as pool:
                list(pool.map(bench.spawn, batch))
            running = target
            time.sleep(args.settle)
            before = query_count(variant, hub, condor_q)
            time.sleep(args.window)
            after = query_count(variant, hub, condor_q)
            result["load"][target] = {"schedd_queries_per_min": (after - before) * 60 / args.window}
            print(variant, target, "servers:", json.dumps(result["load"][target]), flush=True)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(bench.stop, users[:running]))
        for i in range(args.spawns):
            name = users[i % len(users)]
            result["spawn_times"].append(bench.spawn(name))
            bench.stop(name)
            time.sleep(args.pause)
        print(variant, "spawn times:", [round(t, 2) for t in result["spawn_times"]], flush=True)
    return result


def report(results: dict) -> None:
    counts = sorted({int(n) for res in results["variants"].values() for n in res["load"]})
    print("\n| variant | " + " | ".join(f"schedd queries/min @{n}" for n in counts) + " | spawn median (s) |")
    print("|---|" + "---|" * (len(counts) + 1))
    for variant, res in results["variants"].items():
        load = {int(n): v for n, v in res["load"].items()}
        loads = " | ".join(f"{load[n]['schedd_queries_per_min']:.1f}" if n in load else "" for n in counts)
        median = statistics.median(res["spawn_times"]) if res["spawn_times"] else float("nan")
        print(f"| {variant} | {loads} | {median:.2f} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, nargs="+", default=[10, 30], help="running-server counts to measure")
    parser.add_argument("--window", type=float, default=60, help="seconds to count queries at each count")
    parser.add_argument("--settle", type=float, default=10, help="seconds to wait after spawns before counting")
    parser.add_argument("--spawns", type=int, default=10, help="sequential spawns for the spawn-time median")
    parser.add_argument("--pause", type=float, default=3, help="seconds between sequential spawns")
    parser.add_argument("--poll-interval", type=float, default=30, help="Spawner.poll_interval of both variants")
    parser.add_argument("--variants", nargs="+", default=["stock", "ours"], choices=["stock", "ours"])
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    if args.report:
        report(json.loads(Path(args.report).read_text()))
        return

    condor = condor_env()
    users = bench_users(max(args.servers))
    ensure_users(users)
    results = {"args": vars(args), "variants": {}}
    workdir = Path(tempfile.mkdtemp(prefix="sgbench-condor-", dir="/var/tmp"))
    os.chmod(workdir, 0o755)
    print("hub state and logs in", workdir, flush=True)
    try:
        for variant in args.variants:
            results["variants"][variant] = run_variant(variant, args, users, condor, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
