"""A notebook job array (``science_gateway.jobs``) vs the same notebook as N bare sbatch + papermill jobs.

Both sides run the same parameterised notebook on N small datasets (one CSV file each, one task or
job each: papermill, a kernel, the mean of the file), on the same Slurm, with the same resources
(1 core, 1 GiB, partition ``cpu``, the same account), as the same unix user:

- **ours**: ``jobs.submit(notebook, inputs=[...])``: one ``sbatch`` of a job array, watched with
  ``Run.status()`` (one ``squeue`` for all tasks per look);
- **bare**: a loop of N ``sbatch --wrap "python -m papermill ..."`` (one per dataset), watched with
  one ``squeue --jobs=ID,ID,...`` per look (the cheapest a script can do).

Both look every ``--poll`` seconds. Measured: ``sbatch`` calls, ``squeue`` calls per minute while
the jobs run (through logging wrappers, sgtest.commands.FakeCommand), slurmctld's own RPC counts
(``sdiag`` deltas: batch-job submissions and job-information queries; other users of a shared
Slurm add to these), and the time from the first submission until every task has ended (as the
watcher sees it, so within one poll). Run as root on a machine where ``scripts/services/slurm``
runs, with a world-readable venv that has the package with the ``batch`` extra::

    /var/tmp/sg-venv/bin/python benchmarks/notebook_array_bench.py --tasks 100 --json results.json

As root it runs itself again as ``--user`` (default ``astro3``: it has a Slurm association with
``--account``); the datasets, notebooks and outputs go to a folder in that user's home, removed
at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
         "DEADLINE"}


def notebook() -> dict:
    def code(source, tags=()):
        return {"cell_type": "code", "execution_count": None, "id": f"c{len(source)}{len(tags)}",
                "metadata": {"tags": list(tags)}, "outputs": [], "source": source}

    return {"cells": [code('dataset = ""', tags=["parameters"]),
                      code("import csv, statistics\nvalues = [float(r[0]) for r in csv.reader(open(dataset))]"),
                      code("print('MEAN', dataset, statistics.mean(values))")],
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5}


def sdiag() -> dict:
    """slurmctld's RPC counts: batch submissions, job/partition/node information queries."""
    try:
        out = subprocess.run(["sdiag"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {"submit": 0, "info": 0}
    counts = {"submit": 0, "info": 0}
    for name, count in re.findall(r"^\s*(REQUEST_\w+)\s+\(\s*\d+\)\s+count:(\d+)", out, re.M):
        if name == "REQUEST_SUBMIT_BATCH_JOB":
            counts["submit"] += int(count)
        elif "INFO" in name:
            counts["info"] += int(count)
    return counts


def delta(after: dict, before: dict) -> dict:
    return {k: after[k] - before[k] for k in after}


def session_environ(args, bin_dir: Path) -> dict:
    """What the Slurm spawner hands a user's server, for a user of group ``bench`` charging ``--account``."""
    from science_gateway.core.batch import NotebookJobs, batch_environment
    from science_gateway.core.policy import ResourcePolicy
    from science_gateway.core.presets import DaskPresets, dask_environment
    from science_gateway.spawners.slurm_script import build_comment
    from traitlets.config import Config

    policy = ResourcePolicy(config=Config({"ResourcePolicy": {"groups": {"bench": {
        "accounts": [args.account],
        "partitions": {"cpu": {"max_cores": 1, "max_memory_gb": 2, "max_walltime_hours": 2}}}}}}))
    jobs = NotebookJobs(job_name=args.job_name, submit_command=str(bin_dir / "sbatch"),
                        query_command=str(bin_dir / "squeue"), max_array_tasks=max(1000, args.tasks),
                        output_directory=str(args.work / "ours"), record_directory=str(args.work / "records"),
                        max_parallel_tasks=args.max_parallel)
    env = dict(os.environ)
    env.update(dask_environment(DaskPresets(), backend="slurm", groups=["bench"], choices=policy.choices(["bench"]),
                                account=args.account, comment=build_comment(args.user, "science-gateway")))
    env.update(batch_environment(jobs, groups=["bench"], policy=policy))
    env["SLURM_JOB_PARTITION"] = "cpu"
    return env


def run_ours(args, bin_dir, datasets, nb) -> dict:
    from science_gateway import jobs
    from sgtest.commands import count_calls

    environ = session_environ(args, bin_dir)
    log = bin_dir / "calls.log"
    calls0, rpc0, t0 = count_calls(log), sdiag(), time.monotonic()
    run = jobs.submit(str(nb), inputs=[str(d) for d in datasets], input_parameter="dataset", memory_gb=1,
                      walltime_hours=1, environ=environ)
    submitted = time.monotonic() - t0
    while True:
        status = run.status()
        if status["state"] in ("COMPLETED", "FAILED", "CANCELLED") or time.monotonic() - t0 > args.timeout:
            break
        time.sleep(args.poll)
    elapsed = time.monotonic() - t0
    if status["state"] not in ("COMPLETED", "FAILED", "CANCELLED"):
        run.cancel()  # given up (--timeout): nothing of the benchmark stays queued
    calls, rpc = count_calls(log), sdiag()
    states = [t["state"] for t in status["tasks"]]
    return {"side": "ours (one job array)", "tasks": len(datasets), "job_id": run.job_id, "submit_seconds": submitted,
            "states": dict(Counter(states)),
            "seconds": elapsed, "sbatch": calls["sbatch"] - calls0["sbatch"], "squeue": calls["squeue"] - calls0["squeue"],
            "sdiag": delta(rpc, rpc0), "completed": states.count("COMPLETED"), "ok": status["state"] == "COMPLETED"}


def run_bare(args, bin_dir, datasets, nb) -> dict:
    from sgtest.commands import count_calls

    out_dir = args.work / "bare"
    out_dir.mkdir()
    log = bin_dir / "calls.log"
    python = sys.executable
    calls0, rpc0, t0 = count_calls(log), sdiag(), time.monotonic()
    ids = []

    def submit(i, dataset):
        wrap = f"{python} -m papermill --no-progress-bar {nb} {out_dir}/bench-{i}.ipynb -p dataset {dataset}"
        out = subprocess.run([str(bin_dir / "sbatch"), "--parsable", f"--job-name={args.job_name}", "--partition=cpu",
                              "--nodes=1", "--ntasks=1", "--cpus-per-task=1", "--mem=1G", "--time=01:00:00",
                              f"--account={args.account}", f"--output={out_dir}/slurm-%j.out", f"--chdir={out_dir}",
                              f"--wrap={wrap}"], capture_output=True, text=True, check=True, timeout=60)
        ids.append(out.stdout.strip().split(";")[0])

    # with --max-parallel K: at most K jobs queued or running, the next submitted as one ends
    # (what the array's --array=...%K does in Slurm)
    waiting = list(enumerate(datasets))
    while waiting and (not args.max_parallel or len(ids) < args.max_parallel):
        submit(*waiting.pop(0))
    submitted = time.monotonic() - t0
    states = {}
    while True:
        out = subprocess.run([str(bin_dir / "squeue"), "--noheader", f"--jobs={','.join(ids)}", "--states=all",
                              "--format=%i|%T"], capture_output=True, text=True, timeout=60).stdout
        states = dict(line.split("|", 1) for line in out.split() if "|" in line)
        ended = [i for i in ids if states.get(i, "").split()[0:1] and states[i].split()[0] in FINAL]
        while waiting and len(ids) - len(ended) < args.max_parallel:
            submit(*waiting.pop(0))
        if not waiting and len(ended) == len(ids) or time.monotonic() - t0 > args.timeout:
            break
        time.sleep(args.poll)
    elapsed = time.monotonic() - t0
    if len(ended) < len(ids):  # given up (--timeout): nothing of the benchmark stays queued
        subprocess.run(["scancel", *sorted(set(ids) - set(ended))], timeout=60, check=False)
    calls, rpc = count_calls(log), sdiag()
    done = sum(1 for i in ids if states.get(i) == "COMPLETED")
    held = Counter(states.get(i, "?") for i in ids)
    return {"side": "bare (N sbatch + papermill)", "tasks": len(datasets), "submit_seconds": submitted,
            "states": dict(held),
            "seconds": elapsed, "sbatch": calls["sbatch"] - calls0["sbatch"], "squeue": calls["squeue"] - calls0["squeue"],
            "sdiag": delta(rpc, rpc0), "completed": done, "ok": done == len(ids)}


def as_user(args) -> int:
    from sgtest.commands import FakeCommand

    account = pwd.getpwuid(os.getuid())
    home = account.pw_dir
    # runuser keeps root's environment: the jobs (both sides export it) need the user's own
    os.environ.update(HOME=home, USER=account.pw_name, LOGNAME=account.pw_name)
    args.work = Path(tempfile.mkdtemp(prefix="sgbench-nb-", dir=home))
    try:
        bin_dir = args.work / "bin"
        for name in ("sbatch", "squeue"):
            FakeCommand(bin_dir, name, real=shutil.which(name) or f"/usr/bin/{name}", log=bin_dir / "calls.log")
        data = args.work / "data"
        data.mkdir()
        datasets = []
        for i in range(args.tasks):
            path = data / f"ds-{i:03d}.csv"
            path.write_text("".join(f"{i + j * 0.5}\n" for j in range(50)))
            datasets.append(path)
        nb = args.work / "bench.ipynb"
        nb.write_text(json.dumps(notebook()))
        results = []
        for side in args.order.split(","):
            result = (run_ours if side == "ours" else run_bare)(args, bin_dir, datasets, nb)
            result["squeue_per_minute"] = round(result["squeue"] / (result["seconds"] / 60), 1)
            result["sdiag_info_per_minute"] = round(result["sdiag"]["info"] / (result["seconds"] / 60), 1)
            print(json.dumps(result), flush=True)
            results.append(result)
        by_side = {r["side"].split()[0]: r for r in results}
        if "ours" in by_side and "bare" in by_side:
            ratio = by_side["ours"]["seconds"] / by_side["bare"]["seconds"]
            print(f"time ours/bare: {ratio:.2f} (target <= 1.1); sbatch ours {by_side['ours']['sbatch']} vs bare "
                  f"{by_side['bare']['sbatch']}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
        return 0 if all(r["ok"] for r in results) else 1
    finally:
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100, help="datasets: array tasks (ours), jobs (bare)")
    parser.add_argument("--poll", type=float, default=2.0, help="seconds between looks at the queue (both sides)")
    parser.add_argument("--user", default="astro3", help="unix user the jobs run as (when started as root)")
    parser.add_argument("--account", default="astro-2024", help="Slurm account both sides charge")
    parser.add_argument("--max-parallel", type=int, default=0,
                        help="at most this many tasks (jobs) at once on both sides: ours --array=...%%K, bare a "
                             "window of K submissions (0: all at once)")
    parser.add_argument("--timeout", type=float, default=1800, help="give a side up after this many seconds")
    parser.add_argument("--order", default="ours,bare", help="which side first: ours,bare or bare,ours")
    parser.add_argument("--job-name", default="sgbench-notebooks")
    parser.add_argument("--json", help="write the results here (as the user)")
    parser.add_argument("--keep", action="store_true", help="keep the datasets and executed notebooks")
    args = parser.parse_args(argv)
    if os.getuid() == 0:
        pwd.getpwnam(args.user)  # KeyError: create it (scripts/services/slurm install makes astro3)
        argv = [a for a in (argv if argv is not None else sys.argv[1:])]
        os.execvp("runuser", ["runuser", "-u", args.user, "--", sys.executable, str(Path(__file__).resolve()), *argv])
    return as_user(args)


if __name__ == "__main__":
    sys.exit(main())
