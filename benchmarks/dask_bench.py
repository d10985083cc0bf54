"""Stock dask-jobqueue ``SLURMCluster`` vs a Science Gateway preset cluster, on the same Slurm.

Run as root on a machine where ``scripts/services/slurm start`` has run, with the package (extra
``dask``) installed in a world-readable venv::

    /var/tmp/venv-dask/bin/python benchmarks/dask_bench.py --repeats 3

Both variants run the same worker size (1 core, 1 GiB per worker), partition, walltime, Python,
``interface="lo"`` and log directory, from the same process (the scheduler lives here, as in a
kernel). Measured:

- **time to 16 workers**: ``scale(16)`` until ``wait_for_workers(16)`` returns;
- **sbatch calls** for that scale-up, counted by ``sbatch``/``scancel`` wrapper scripts first on PATH;
- **early cancellations under adapt()**: with ``adapt(minimum=0, maximum=16)`` and bursts of
  short tasks separated by idle gaps, the worker jobs the cluster cancelled before the end although
  none of their workers ran a task (each task returns the Slurm job id it ran in).

Stock is ``SLURMCluster(cores=1, processes=1, memory="1GiB", ...)``: one worker per job, what the
dask-jobqueue docs show. Ours is ``science_gateway.dask.cluster(preset)`` with a preset of the same
worker size and ``workers_per_job`` workers per job (4 by default), with TLS (credentials of its
own); ``ours-plain`` (``--variants ours ours-plain``) is the same cluster without TLS, to measure
what TLS costs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from sgtest.commands import FakeCommand, count_calls  # noqa: E402
from sgtest.hub import wait_for  # noqa: E402

EVENTS: list[tuple] = []  # (event, variant, job name, job id, phase)
PHASE = {"name": "scale"}


def instrumented(base):
    """A job class that records each submitted and each closed job (same for both variants)."""

    class Recorded(base):
        async def start(self):
            await super().start()
            EVENTS.append(("start", self.name, self.job_id, PHASE["name"]))

        async def close(self):
            EVENTS.append(("close", self.name, self.job_id, PHASE["name"]))
            await super().close()

    return Recorded


def make_wrappers(directory: Path) -> Path:
    """Logging wrappers of sbatch and scancel (sgtest.commands.FakeCommand), one shared log."""
    log = directory / "calls.log"
    for name in ("sbatch", "scancel"):
        FakeCommand(directory, name, real=shutil.which(name) or f"/usr/bin/{name}", log=log)
    return log


def calls(log: Path, name: str) -> int:
    return count_calls(log)[name]


def squeue_count(job_name: str) -> int:
    out = subprocess.run(["squeue", "--noheader", f"--name={job_name}", "--format=%i"], capture_output=True,
                         text=True, timeout=30, check=True).stdout
    return len(out.split())


def wait_gone(job_name: str, timeout: float = 120):
    """Until the jobs named ``job_name`` left the queue (at most ``timeout``), then cancel any left."""
    try:
        wait_for(lambda: not squeue_count(job_name), timeout, interval=0.5, what=f"the {job_name} jobs to end")
    except TimeoutError:
        pass
    subprocess.run(["scancel", f"--name={job_name}"], timeout=30, check=False)


def make_cluster(variant: str, args, job_name: str, logs: str):
    if variant == "stock":
        from dask_jobqueue import SLURMCluster
        from dask_jobqueue.slurm import SLURMJob

        return SLURMCluster(
            cores=1, processes=1, memory="1GiB", queue=args.partition, walltime="00:30:00", interface="lo",
            python=sys.executable, job_name=job_name, log_directory=logs, job_cls=instrumented(SLURMJob),
            scheduler_options={"dashboard_address": ":0"},
        )
    from science_gateway import dask as sg_dask
    from science_gateway.dask.clusters import GatewaySLURMJob
    from science_gateway.core.presets import ENV_VAR, DaskPresets

    presets = DaskPresets(
        presets={"bench": {"partition": args.partition, "cores": 1, "memory_gb": 1, "walltime_minutes": 30,
                           "workers_per_job": args.workers_per_job, "max_workers": args.workers}},
        interface="lo", job_name=job_name, log_directory=logs,
    )
    view = presets.user_view(backend="slurm", groups=["bench"], max_dask_workers=args.workers,
                             comment="science-gateway=bench user=root")
    env = {ENV_VAR: json.dumps(view)}
    if variant == "ours-plain":
        # the same preset without TLS (what the gateway's clusters were before they took credentials
        # of their own): cluster() refuses to switch security off, so build it from the builder
        from science_gateway.core.presets import UserDaskConfig
        from science_gateway.dask.builders import slurm_cluster_kwargs
        from science_gateway.dask.clusters import GatewaySLURMCluster

        user = UserDaskConfig.from_environ(env)
        kwargs = slurm_cluster_kwargs("bench", user.preset("bench"), user.settings, account="", comment=user.comment,
                                      python=sys.executable, job_name=job_name, log_directory=logs,
                                      tls_directory="")
        kwargs.update(security=None, shared_temp_directory=None)
        return GatewaySLURMCluster(preset_name="bench", user=user, job_cls=instrumented(GatewaySLURMJob), **kwargs)
    return sg_dask.cluster("bench", environ=env, job_cls=instrumented(GatewaySLURMJob))


def which_job(x):
    """Sleep ``x`` seconds; return the Slurm job (the array's job for an array task) that ran it."""
    import os as _os
    import time as _time

    _time.sleep(x)
    return _os.environ.get("SLURM_ARRAY_JOB_ID") or _os.environ["SLURM_JOB_ID"]


def run_scale(variant: str, args, log: Path, logs: str, tag: str) -> dict:
    job_name = f"sgbench-dask-{variant}-{tag}"
    PHASE["name"] = "scale"
    cluster = make_cluster(variant, args, job_name, logs)
    client = cluster.get_client()
    before = calls(log, "sbatch")
    t0 = time.monotonic()
    cluster.scale(args.workers)
    client.wait_for_workers(args.workers, timeout=600)
    elapsed = time.monotonic() - t0
    sbatch = calls(log, "sbatch") - before
    assert client.submit(sum, [1, 2]).result() == 3
    PHASE["name"] = "final"
    client.close()
    cluster.close()
    wait_gone(job_name)
    return {"seconds_to_workers": round(elapsed, 2), "sbatch_calls": sbatch}


def run_adapt(variant: str, args, log: Path, logs: str, tag: str) -> dict:
    job_name = f"sgbench-dask-{variant}-adapt-{tag}"
    PHASE["name"] = "adapt"
    start_index = len(EVENTS)
    cluster = make_cluster(variant, args, job_name, logs)
    client = cluster.get_client()
    before = calls(log, "sbatch")
    cluster.adapt(minimum=0, maximum=args.workers)
    did_work: set[str] = set()
    for _ in range(args.bursts):
        futures = client.map(which_job, [args.task_seconds] * args.tasks, pure=False)
        did_work.update(client.gather(futures))
        time.sleep(args.gap)
    PHASE["name"] = "final"
    sbatch = calls(log, "sbatch") - before
    client.close()
    cluster.close()
    wait_gone(job_name)
    events = EVENTS[start_index:]
    closed_early = [(name, job_id) for event, name, job_id, phase in events if event == "close" and phase == "adapt"]

    wasted = [job for job in closed_early if job[1] not in did_work]
    if os.environ.get("SG_BENCH_DEBUG"):
        print("did work:", sorted(map(str, did_work)), "\nclosed early:", closed_early, flush=True)
    submitted = sum(1 for e in events if e[0] == "start")
    return {"adapt_jobs_submitted": submitted, "adapt_sbatch_calls": sbatch,
            "adapt_cancelled_before_end": len(closed_early), "adapt_cancelled_without_work": len(wasted)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--workers-per-job", type=int, default=4)
    parser.add_argument("--partition", default="cpu")
    parser.add_argument("--bursts", type=int, default=3, help="task bursts in the adapt() phase")
    parser.add_argument("--tasks", type=int, default=48, help="tasks per burst")
    parser.add_argument("--task-seconds", type=float, default=1.0)
    parser.add_argument("--gap", type=float, default=15, help="idle seconds after each burst")
    parser.add_argument("--variants", nargs="+", default=["stock", "ours"])
    parser.add_argument("--skip-adapt", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="sgbench-dask-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    log = make_wrappers(work / "bin")
    os.environ["PATH"] = f"{work / 'bin'}{os.pathsep}{os.environ['PATH']}"
    logs = str(work / "logs")
    os.makedirs(logs)
    results = {v: [] for v in args.variants}
    try:
        for repeat in range(args.repeats):
            for variant in args.variants if repeat % 2 == 0 else list(reversed(args.variants)):
                row = run_scale(variant, args, log, logs, f"{repeat}")
                if not args.skip_adapt:
                    row.update(run_adapt(variant, args, log, logs, f"{repeat}"))
                results[variant].append(row)
                print(variant, repeat, json.dumps(row), flush=True)
    finally:
        subprocess.run(["scancel", "--name=" + ",".join(
            f"sgbench-dask-{v}-{k}{r}" for v in args.variants for k in ("", "adapt-") for r in range(args.repeats)
        )], timeout=30, check=False)
    summary = {}
    for variant, rows in results.items():
        summary[variant] = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        summary[variant]["runs"] = rows
    if "stock" in summary and "ours" in summary:
        s, o = summary["stock"], summary["ours"]
        summary["ratios"] = {
            "time_to_workers": round(o["seconds_to_workers"] / s["seconds_to_workers"], 2),
            "sbatch_calls": round(o["sbatch_calls"] / s["sbatch_calls"], 3),
        }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
