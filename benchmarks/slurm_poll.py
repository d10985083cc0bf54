"""Stock batchspawner vs Science Gateway's SlurmSpawner on the same Slurm: scheduler load, spawn time.

Run as root on a machine where ``scripts/services/slurm start`` has run, with the package (extra
``slurm``) installed in a world-readable venv and configurable-http-proxy on PATH::

    /var/tmp/venv-slurm/bin/python benchmarks/slurm_poll.py --servers 10 32 --spawns 10

For each variant a real JupyterHub (``jupyterhub_config.py`` plus a variant config) starts servers
for N users at once, waits until all answer, then counts Slurm query calls for ``--window``
seconds: every ``squeue``/``sacct``/``scontrol`` run (through wrapper scripts that log each call,
whether run directly or through sudo) and slurmctld's own RPC counters (``sdiag``). Then it
measures spawn time (request to ``/user/NAME/api/status`` answering 200) for ``--spawns`` spawns
one after another, and a floor: the same server command submitted by a bare ``sbatch``, timed to
the server answering. Both variants use the same ``Spawner.poll_interval`` (30 s by default).
Users ``sgbench01``... are created as unix accounts when missing.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import secrets
import shutil
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from benchlib import (
    QUERY_COMMANDS,
    Bench,
    add_run_arguments,
    bench_service,
    bench_users,
    ensure_users,
    make_wrappers,
    merge_config,
    slurm_spawner_config,
)
from sgtest.commands import count_calls
from sgtest.hub import RunningHub, free_port, wait_for


def sdiag_reset():
    subprocess.run(["sdiag", "--reset"], check=True, capture_output=True, timeout=20)


def sdiag_job_queries() -> int:
    """slurmctld's count of job/partition/node information RPCs since the last reset."""
    out = subprocess.run(["sdiag"], check=True, capture_output=True, text=True, timeout=20).stdout
    total = 0
    for match in re.finditer(r"^\s*(REQUEST_\w*INFO\w*)\s+\(\s*\d+\)\s+count:(\d+)", out, re.M):
        total += int(match.group(2))
    return total


def variant_config(variant: str, wrappers: Path, users: list[str], token: str, prefix: str, poll: float) -> dict:
    hub = {
        "JupyterHub": {
            "authenticator_class": "dummy",
            "cleanup_servers": True,
            "load_groups": {"bench": {"users": users}},
            **bench_service(token),
        },
        "Authenticator": {"allowed_users": users},
    }
    return merge_config(hub, slurm_spawner_config(variant, wrappers, prefix, poll, group="bench"))


def run_variant(variant, args, users, prefix, workdir: Path, floor: bool = False) -> dict:
    wrappers = workdir / f"wrap-{variant}"
    log = make_wrappers(wrappers)
    token = secrets.token_hex(16)
    config = variant_config(variant, wrappers, users, token, prefix, args.poll_interval)
    hub_port = free_port()
    config["JupyterHub"]["hub_port"] = hub_port
    result = {"variant": variant, "load": {}, "spawn_times": []}
    with RunningHub(workdir / f"hub-{variant}", config=config, stock=variant == "stock") as hub:
        bench = Bench(hub, token)
        running = 0
        for target in sorted(args.servers):
            batch = users[running:target]
            with ThreadPoolExecutor(len(batch)) as pool:
                list(pool.map(bench.spawn, batch))
            running = target
            time.sleep(args.settle)
            before = count_calls(log)
            sdiag_reset()
            time.sleep(args.window)
            after = count_calls(log)
            rpcs = sdiag_job_queries()
            per_min = {k: (after[k] - before[k]) * 60 / args.window for k in QUERY_COMMANDS}
            result["load"][target] = {
                "calls_per_min": per_min,
                "total_calls_per_min": sum(per_min.values()),
                "sdiag_info_rpcs_per_min": rpcs * 60 / args.window,
            }
            print(variant, target, "servers:", json.dumps(result["load"][target]), flush=True)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(bench.stop, users[:running]))
        calls_before = count_calls(log)
        for i in range(args.spawns):
            name = users[i % len(users)]
            result["spawn_times"].append(bench.spawn(name))
            bench.stop(name)
            time.sleep(args.pause)  # let the cancelled job leave the node, as for the floor
        spawn_calls = count_calls(log)
        result["query_calls_per_spawn_and_stop"] = (
            sum(spawn_calls.values()) - sum(calls_before.values())
        ) / max(1, args.spawns)
        print(variant, "spawn times:", [round(t, 2) for t in result["spawn_times"]], flush=True)
        if floor:
            result["floor_spawn_times"] = bare_sbatch_floor(bench, hub_port, args, users[0], prefix)
            print("floor:", [round(t, 2) for t in result["floor_spawn_times"]], flush=True)
    return result


def bare_sbatch_floor(bench: Bench, hub_port: int, args, user: str, prefix: str) -> list[float]:
    """The same job (jupyterhub-singleuser, same resources) submitted by a bare sbatch, timed to the
    server answering /api/status; it talks to the running hub with a token made for the user."""
    times = []
    pw = pwd.getpwnam(user)
    for _ in range(args.spawns):
        token = bench.api("POST", f"/users/{user}/tokens", json={"note": "floor", "expires_in": 600, "scopes": [f"access:servers!user={user}"]}).json()["token"]
        port = free_port()
        env = {
            "PATH": f"{prefix}/bin:/usr/bin:/bin", "HOME": pw.pw_dir, "USER": user,
            "JUPYTERHUB_API_TOKEN": token, "JUPYTERHUB_API_URL": f"http://127.0.0.1:{hub_port}/hub/api",
            "JUPYTERHUB_USER": user, "JUPYTERHUB_BASE_URL": "/", "JUPYTERHUB_CLIENT_ID": f"jupyterhub-user-{user}",
            "JUPYTERHUB_SERVICE_PREFIX": f"/user/{user}/", "JUPYTERHUB_SERVICE_URL": f"http://0.0.0.0:{port}/user/{user}/",
            "JUPYTERHUB_OAUTH_CALLBACK_URL": f"/user/{user}/oauth_callback", "JUPYTERHUB_DEFAULT_URL": "/lab",
            "JUPYTERHUB_SERVER_NAME": "",
            "JUPYTERHUB_OAUTH_ACCESS_SCOPES": json.dumps([f"access:servers!server={user}/", f"access:servers!user={user}"]),
        }
        script = f"#!/bin/bash\nexec {prefix}/bin/jupyterhub-singleuser --ServerApp.port_retries=0\n"
        t0 = time.monotonic()
        job = subprocess.run(
            ["/usr/bin/sudo", "-E", "-u", user, "/usr/bin/sbatch", "--parsable", "--partition=cpu", "--mem=1G",
             "--cpus-per-task=1", "--time=01:00:00", f"--chdir={pw.pw_dir}",
             f"--output={pw.pw_dir}/.sgbench-floor-%j.log", f"--export={','.join(sorted(env))}"],
            input=script, env=env, capture_output=True, text=True, check=True, timeout=60,
        ).stdout.strip().split(";")[0]
        url = f"http://127.0.0.1:{port}/user/{user}/api/status"
        try:
            check = {"Authorization": f"token {token}"}  # the user's own token: the owner may access
            wait_for(lambda: requests.get(url, headers=check, timeout=5).status_code == 200, 300, interval=0.1,
                     what="the bare server")
            times.append(time.monotonic() - t0)
        finally:
            subprocess.run(["scancel", job], timeout=30, check=False)
        time.sleep(args.pause)
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, nargs="+", default=[10, 32], help="running-server counts to measure")
    parser.add_argument("--window", type=float, default=60, help="seconds to count calls at each count")
    parser.add_argument("--settle", type=float, default=10, help="seconds to wait after spawns before counting")
    parser.add_argument("--spawns", type=int, default=10, help="sequential spawns for the spawn-time median")
    parser.add_argument("--pause", type=float, default=3, help="seconds between sequential spawns")
    parser.add_argument("--poll-interval", type=float, default=30, help="Spawner.poll_interval of both variants")
    parser.add_argument("--variants", nargs="+", default=["stock", "ours"], choices=["stock", "ours"])
    add_run_arguments(parser, report=False)
    args = parser.parse_args(argv)

    users = bench_users(max(args.servers))
    ensure_users(users)
    results = {"args": vars(args), "variants": {}}
    workdir = Path(tempfile.mkdtemp(prefix="sgbench-", dir="/var/tmp"))
    os.chmod(workdir, 0o755)
    print("hub state and logs in", workdir, flush=True)
    try:
        for variant in args.variants:
            last = variant == args.variants[-1]
            results["variants"][variant] = run_variant(variant, args, users, args.prefix, workdir, floor=last)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    floor = results["variants"][args.variants[-1]]["floor_spawn_times"]
    results["floor_spawn_times"] = floor

    print("\n| variant | " + " | ".join(f"queries/min @{n}" for n in sorted(args.servers))
          + " | sdiag info RPCs/min @" + str(max(args.servers)) + " | spawn median (s) |")
    print("|---|" + "---|" * (len(args.servers) + 2))
    for variant, res in results["variants"].items():
        loads = " | ".join(f"{res['load'][n]['total_calls_per_min']:.1f}" for n in sorted(args.servers))
        rpcs = res["load"][max(args.servers)]["sdiag_info_rpcs_per_min"]
        print(f"| {variant} | {loads} | {rpcs:.1f} | {statistics.median(res['spawn_times']):.2f} |")
    print(f"| bare sbatch floor | | | {statistics.median(floor):.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
