import subprocess

import pytest
from sgtest.hub import wait_for
from sgtest.services import missing
from sgtest.slurm import SlurmFixture


@pytest.fixture(scope="module")
def slurm():
    """The real Slurm with accounting (slurmdbd), this module's wrappers and job name."""
    fixture = SlurmFixture()
    if fixture.env.get("SLURM_ACCOUNTING") != "slurmdbd":
        missing("slurm", "the running Slurm has no accounting (scripts/services/slurm start sets up slurmdbd)")
    yield fixture
    fixture.cleanup()


def account_cpu_seconds(account: str) -> int:
    out = subprocess.run(["sacct", "-a", "-X", "-n", "-P", "-A", account, "-S", "2000-01-01", "-E", "now",
                          "--format=CPUTimeRAW"], capture_output=True, text=True, timeout=30, check=True).stdout
    return sum(int(x) for x in out.split() if x.isdigit())


def slurm_used_minutes(account: str) -> int:
    """The account's cpu usage as slurmctld counts it against GrpTRESMins (sshare's GrpTRESRaw)."""
    out = subprocess.run(["sshare", "-a", "-P", "-n", "-A", account, "-o", "Account,User,GrpTRESRaw"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    for line in out.splitlines():
        name, user, raw = (line.split("|") + ["", "", ""])[:3]
        if name.strip() == account and not user:
            value = dict(p.split("=", 1) for p in raw.split(",") if "=" in p).get("cpu", "0")
            return int(value) if value.isdigit() else 0
    return 0


@pytest.fixture(scope="module")
def spent_account(slurm):
    """sg-spent (GrpTRESMins=cpu=1) with at least one core-minute used, in slurmdbd's record and in
    slurmctld's own count (the service's start spends it on a fresh database; a 31 s job on 2 cores
    here otherwise, e.g. after slurmctld lost its usage state by running without accounting)."""
    account = slurm.env["SLURM_SPENT_ACCOUNT"]
    if account_cpu_seconds(account) < 60 or slurm_used_minutes(account) < 1:
        subprocess.run(["sudo", "-u", "demo", "sbatch", "--parsable", f"--account={account}",
                        f"--job-name={slurm.job_name}-spend", "--cpus-per-task=2", "--mem=64M", "--time=2",
                        "--chdir=/tmp", "--output=/dev/null", "--wrap=sleep 31"],
                       check=True, capture_output=True, text=True, timeout=30)
        # slurmctld adds up usage once a minute (PriorityCalcPeriod=1)
        wait_for(lambda: account_cpu_seconds(account) >= 60 and slurm_used_minutes(account) >= 1, 150,
                 interval=2, what=f"{account} to be spent")
    return account
