"""Shared set-up for the Slurm-backed hub tests: wrapper commands, the test policy, the hub config.

The wrappers (sgtest.commands.FakeCommand) stand between the hub and the real Slurm commands:
``sbatch`` logs each call (so a test can prove a refused spawn never reached it), ``squeue`` logs
each call and can be switched to fail or hang (``set_squeue_mode``) to inject scheduler trouble,
``sinfo`` logs each call. :meth:`SlurmFixture.controller_stopped` and :meth:`SlurmFixture.node_drained`
inject faults into the shared Slurm itself (restored on the way out): use them rarely and briefly,
other tests share that Slurm.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from science_gateway.hub.config import DEMO_USERS
from science_gateway.hub.passwords import hash_password
from sgtest.commands import SCRIPT, FakeCommand
from sgtest.server import small_server_env
from sgtest.services import missing, service_env

SLURM_SERVICE = Path(__file__).resolve().parents[2] / "scripts" / "services" / "slurm"

#: hub users of the Slurm tests: name -> (password, groups); each has a unix account
#: (scripts/services/slurm install creates them)
USERS = {
    **{name: (password, groups) for name, (password, groups, _admin) in DEMO_USERS.items()},
    "student": ("student", ["students"]),
    "astro1": ("astro1", ["astro"]),
    "astro2": ("astro2", ["astro"]),
    "astro3": ("astro3", ["astro"]),
}

POLICY = {
    "astro": {
        "accounts": ["astro-2024", "astro-dev"],
        "partitions": {
            "cpu": {"max_cores": 2, "max_memory_gb": 4, "max_walltime_hours": 24},
            "long": {"max_cores": 1, "max_memory_gb": 2, "max_walltime_hours": 168},
        },
    },
    "students": {
        "accounts": ["teaching"],
        "partitions": {"debug": {"max_cores": 1, "max_memory_gb": 1, "max_walltime_hours": 1}},
    },
}

#: the wrapper script, for code that imported the old per-command templates (one now: sgtest.commands)
SQUEUE_WRAPPER = SBATCH_WRAPPER = SCRIPT


class SlurmFixture:
    """Wrapper commands in a world-readable dir, and the facts the tests need about Slurm."""

    def __init__(self):
        env = service_env("slurm")
        self.env = env
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=10)
        if "UP" not in ping.stdout:
            missing("slurm", f"scontrol ping: {ping.stdout.strip()} {ping.stderr.strip()}")
        for name in USERS:
            try:
                import pwd

                pwd.getpwnam(name)
            except KeyError:
                missing("slurm", f"no unix account {name!r} (run scripts/services/slurm install)")
        self.job_name = f"sgtest-{secrets.token_hex(4)}"
        self.dir = Path(f"/var/tmp/{self.job_name}")
        self.dir.mkdir(mode=0o755)
        os.chmod(self.dir, 0o755)
        self.squeue = FakeCommand(self.dir, "squeue", real=env.get("SLURM_SQUEUE", "/usr/bin/squeue"))
        # sbatch runs as the user through sudo: its log has the argv, its .env the names (never values)
        self.sbatch = FakeCommand(self.dir, "sbatch", real=env.get("SLURM_SBATCH", "/usr/bin/sbatch"), env_names=True)
        self.scancel = FakeCommand(self.dir, "scancel", real=env.get("SLURM_SCANCEL", "/usr/bin/scancel"))
        self.sinfo = FakeCommand(self.dir, "sinfo", real=env.get("SLURM_SINFO", "/usr/bin/sinfo"))
        self.node = env.get("SLURM_NODE") or subprocess.run(
            ["hostname", "-s"], capture_output=True, text=True, check=True
        ).stdout.strip()

    def set_squeue_mode(self, mode: str):
        self.squeue.set(mode=mode)

    def calls(self, command: str) -> int:
        """Calls of the wrapped ``squeue``, ``sbatch`` or ``scancel`` so far."""
        return getattr(self, command).calls()

    def jobs(self) -> dict[str, dict]:
        """Jobs of this test run as Slurm sees them: user -> fields."""
        out = subprocess.run(
            ["squeue", "--noheader", f"--name={self.job_name}", "--format=%i|%T|%u|%k|%j|%P|%a|%C|%m"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
        jobs = {}
        for line in out.splitlines():
            job_id, state, user, comment, name, partition, account, cpus, mem = line.split("|")
            jobs[user] = dict(job_id=job_id, state=state, comment=comment, name=name, partition=partition,
                              account=account, cpus=cpus, mem=mem)
        return jobs

    def job_ids(self) -> list[str]:
        """Ids of this run's jobs (every server, several per user) that Slurm still runs or queues."""
        out = subprocess.run(
            ["squeue", "--noheader", f"--name={self.job_name}", "--format=%i"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
        return out.split()

    def node_state(self) -> str:
        """The test node's state and reason, as ``sinfo`` prints them (``idle``, ``drained|why``)."""
        return subprocess.run(
            ["sinfo", "--noheader", "--Node", f"--nodes={self.node}", "--format=%T|%E"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.splitlines()[0].strip()

    @contextmanager
    def controller_stopped(self):
        """slurmctld stopped (jobs, slurmd and munged go on); started again on the way out, as
        ``scripts/services/slurm start-controller`` does. Keep the block short."""
        subprocess.run([str(SLURM_SERVICE), "stop-controller"], check=True, timeout=60)
        try:
            yield
        finally:
            subprocess.run([str(SLURM_SERVICE), "start-controller"], check=True, timeout=60)

    @contextmanager
    def node_drained(self, reason: str):
        """The test node drained (running jobs go on, new ones wait) with ``reason``; resumed on
        the way out. Keep the block short."""
        update = ["scontrol", "update", f"nodename={self.node}"]
        subprocess.run([*update, "state=drain", f"reason={reason}"], check=True, timeout=30)
        try:
            yield
        finally:
            subprocess.run([*update, "state=resume"], check=True, timeout=30)

    def job_state(self, job_id: str) -> str:
        out = subprocess.run(["squeue", "--noheader", f"--jobs={job_id}", "--states=all", "--format=%T"],
                             capture_output=True, text=True, timeout=20).stdout
        return out.strip()

    def start_blocker(self) -> str:
        """A job that fills the one-core debug partition; waits until it runs."""
        from sgtest.hub import wait_for

        job_id = subprocess.run(
            ["sbatch", "--parsable", "--partition=debug", f"--job-name={self.job_name}-blocker", "--mem=64M",
             "--time=10", "--chdir=/tmp", "--output=/dev/null", "--wrap=sleep 600"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout.strip()
        wait_for(lambda: self.job_state(job_id) == "RUNNING", 120,
                 what="the blocker job to fill the debug partition (are other jobs holding the node's cores?)")
        return job_id

    def cancel_all(self):
        for name in (self.job_name, f"{self.job_name}-blocker"):
            subprocess.run(["scancel", f"--name={name}"], timeout=30, check=False)

    def cleanup(self):
        self.cancel_all()
        shutil.rmtree(self.dir, ignore_errors=True)

    def small_server_env(self) -> dict:
        """The job environment of the smallest real server (:func:`sgtest.server.small_server_env`)."""
        return small_server_env(self.dir)

    def hub_config(self, poller: dict | None = None, **spawner) -> dict:
        """Hub config for these tests; ``poller`` updates SlurmQueuePoller's, ``spawner`` SlurmSpawner's."""
        return hub_config(self.dir, self.job_name, poller, **spawner)


def hub_config(command_dir: Path, job_name: str, poller: dict | None = None, **spawner) -> dict:
    """The Slurm spawner's hub config with the ``sbatch``, ``scancel``, ``squeue`` and ``sinfo`` of
    ``command_dir`` (wrappers of the real ones, or stand-ins), the test policy and :data:`USERS`;
    ``poller`` updates SlurmQueuePoller's, ``spawner`` SlurmSpawner's."""
    prefix = os.environ.get("SG_TEST_VENV") or sys.prefix
    command_dir = Path(command_dir)
    return {
        "JupyterHub": {"spawner_class": "science-gateway-slurm", "cleanup_servers": False},
        "Spawner": {"http_timeout": 60, "poll_interval": 2},
        "SlurmSpawner": {
            "python_prefix": prefix,
            "sbatch_path": str(command_dir / "sbatch"),
            "scancel_path": str(command_dir / "scancel"),
            "job_name": job_name,
            **spawner,
        },
        "SlurmQueuePoller": {
            "squeue": str(command_dir / "squeue"),
            "sinfo": str(command_dir / "sinfo"),
            "interval": 2,
            "fast_interval": 0.5,
            "timeout": 3,
            **(poller or {}),
        },
        "ResourcePolicy": {"groups": POLICY},
        "DemoAuthenticator": {
            "users": {
                name: {"password": hash_password(password), "groups": groups, "admin": name == "admin"}
                for name, (password, groups) in USERS.items()
            }
        },
    }
