"""Shared set-up for the HTCondor-backed tests: wrapper commands, the test policy, the hub config.

The wrappers (sgtest.commands.FakeCommand) stand between the hub and the real ``condor_submit`` and
``condor_rm``: each call is logged, so a test can prove a refused spawn never reached the schedd.
The pool is the one ``scripts/services/htcondor start`` runs (``$SG_SERVICES_DIR/htcondor.env``);
this run's jobs carry their own ``GatewayJob`` (``sgtest-XXXXXXXX``) and are removed at the end.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

from sgtest.commands import FakeCommand
from sgtest.services import missing, service_env
from sgtest.slurm import POLICY, USERS
from science_gateway.hub.passwords import hash_password

#: the job ad attributes :meth:`CondorFixture.jobs` reports
JOB_ATTRS = ["ClusterId", "ProcId", "JobStatus", "Owner", "GatewayUser", "GatewayJob", "GatewayPartition",
             "AcctGroup", "AcctGroupUser", "RequestCpus", "RequestMemory", "HoldReason", "Environment", "Env",
             "PeriodicRemove", "Iwd"]


class CondorFixture:
    """The pool's facts, wrappers in a world-readable dir, and helpers that read the queue."""

    def __init__(self):
        env = service_env("htcondor")
        self.env = env
        self.config = env["CONDOR_CONFIG"]
        self.bin = Path(env["CONDOR_BIN"])
        probe = self.run("condor_q", "-totals", check=False)
        if probe.returncode != 0:
            missing("htcondor", f"condor_q: {probe.stderr.strip()[-300:]}")
        for name in USERS:
            try:
                pwd.getpwnam(name)
            except KeyError:
                missing("htcondor", f"no unix account {name!r} (run scripts/services/htcondor install)")
        self.job_name = f"sgtest-{secrets.token_hex(4)}"
        self.dir = Path(f"/var/tmp/{self.job_name}")
        self.dir.mkdir(mode=0o755)
        os.chmod(self.dir, 0o755)
        self.condor_submit = FakeCommand(self.dir, "condor_submit", real=str(self.bin / "condor_submit"), env_names=True)
        self.condor_rm = FakeCommand(self.dir, "condor_rm", real=str(self.bin / "condor_rm"))

    def run(self, tool: str, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """A condor tool as root (the test process), with the pool's config."""
        return subprocess.run([str(self.bin / tool), *args], capture_output=True, text=True, timeout=timeout,
                              check=check, env={**os.environ, "CONDOR_CONFIG": self.config}, cwd="/tmp")

    def hub_env(self) -> dict:
        """What the hub's environment needs for the pool (the bindings and the tools read it)."""
        return {"CONDOR_CONFIG": self.config}

    def calls(self, command: str) -> int:
        return getattr(self, command).calls()

    def ads(self, constraint: str | None = None) -> list[dict]:
        constraint = constraint or f'GatewayJob == "{self.job_name}"'
        out = self.run("condor_q", "-allusers", "-constraint", constraint, "-json", "-attributes",
                       ",".join(JOB_ATTRS)).stdout
        return json.loads(out) if out.strip() else []

    def jobs(self) -> dict[str, dict]:
        """This run's jobs that are idle, running or held: owner -> ad."""
        return {ad["Owner"]: ad for ad in self.ads() if ad.get("JobStatus") in (1, 2, 5)}

    def job_ids(self) -> list[str]:
        return [f"{ad['ClusterId']}.{ad['ProcId']}" for ad in self.ads() if ad.get("JobStatus") in (1, 2, 5)]

    def remove(self, job_id: str):
        self.run("condor_rm", job_id)

    def cleanup(self):
        self.run("condor_rm", "-constraint", f'GatewayJob == "{self.job_name}"', check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def hub_config(self, poller: dict | None = None, **spawner) -> dict:
        """Hub config for these tests; ``poller`` updates CondorQueuePoller's, ``spawner`` CondorSpawner's."""
        prefix = os.environ.get("SG_TEST_VENV") or sys.prefix
        return {
            "JupyterHub": {"spawner_class": "science-gateway-condor", "cleanup_servers": False},
            "Spawner": {"http_timeout": 60, "poll_interval": 2},
            "CondorSpawner": {
                "python_prefix": prefix,
                "condor_submit_path": self.condor_submit.path,
                "condor_rm_path": self.condor_rm.path,
                "job_name": self.job_name,
                # `long` is mapped to a requirement no slot of the test pool meets: its jobs stay idle
                "partitions": {"long": {"requirements": "TARGET.SG_TEST_POOL =!= True"}},
                **spawner,
            },
            "CondorQueuePoller": {"interval": 2, "fast_interval": 0.5, "timeout": 5, **(poller or {})},
            "ResourcePolicy": {"groups": POLICY},
            "DemoAuthenticator": {
                "users": {
                    name: {"password": hash_password(password), "groups": groups, "admin": name == "admin"}
                    for name, (password, groups) in USERS.items()
                }
            },
        }
