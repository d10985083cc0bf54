"""Accounting from the real scheduler: slurmdbd on MariaDB beside the test Slurm, a real hub.

Jobs from the gateway are in ``sacct`` with the right user and account; the usage a user reads
(``/hub/api/gateway/usage``, the spawn form; notebook servers and Dask workers apart) is what ``sacct`` reports for them; a spent allocation
and an account Slurm does not associate with the user are refused with the reason (and Slurm
itself refuses the second); a user cannot read another's usage; the admin report's JSON and CSV
match ``sacct``. Comparisons run sacct over the very window the hub's snapshot covered, so other
jobs on the shared Slurm cannot make them flaky.
"""

from __future__ import annotations

import csv
import io
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from science_gateway import accounting
from science_gateway.dask.builders import worker_comment
from science_gateway.spawners.slurm_script import build_comment
from sgtest.commands import FakeCommand
from sgtest.hub import HubSession, RunningHub, wait_for
from sgtest.notebooks import api_token
from sgtest.slurm import POLICY, USERS

pytestmark = [pytest.mark.slurm, pytest.mark.hub]


@pytest.fixture(scope="module")
def accounts(slurm):
    return {"spent": slurm.env["SLURM_SPENT_ACCOUNT"], "foreign": slurm.env["SLURM_FOREIGN_ACCOUNT"]}


@pytest.fixture(scope="module")
def acct_commands(slurm):
    return {name: FakeCommand(slurm.dir, name, real=slurm.env.get(f"SLURM_{name.upper()}", f"/usr/bin/{name}"))
            for name in ("sacct", "sacctmgr")}


@pytest.fixture(scope="module")
def hub(slurm, accounts, acct_commands, spent_account, tmp_path_factory):
    config = slurm.hub_config()
    policy = {**POLICY, "astro": {**POLICY["astro"],
                                  "accounts": ["astro-dev", "astro-2024", accounts["spent"], accounts["foreign"]]}}
    config["ResourcePolicy"] = {"groups": policy}
    config["SlurmAccounting"] = {
        "enabled": True, "interval": 1, "notebook_job_name": slurm.job_name, "cluster": slurm.env["SLURM_CLUSTER"],
        "dask_job_name": f"{slurm.job_name}-dask",
        "sacct": acct_commands["sacct"].path, "sacctmgr": acct_commands["sacctmgr"].path,
    }
    with RunningHub(tmp_path_factory.mktemp("accthub"), config=config) as running:
        yield running


def login(hub, name) -> HubSession:
    session = HubSession(hub)
    r = session.login(name, USERS[name][0])
    assert r.status_code == 200, r.text[:300]
    return session


def sacct(*args) -> list[list[str]]:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-T", *args], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    return [line.split("|") for line in out.splitlines() if line]


def window(usage_or_report) -> list[str]:
    start = usage_or_report.get("since") or usage_or_report["start"]
    return ["-S", start, "-E", usage_or_report["as_of"].replace(" ", "T")]


def test_a_gateway_job_is_in_sacct_and_the_usage_the_user_reads_is_what_sacct_reports(slurm, hub):
    demo = login(hub, "demo")
    # a Dask worker job as the kernel's dask-jobqueue submits it (job name and comment of the builders)
    comment = worker_comment(build_comment("demo", "science-gateway"), "small")
    worker = subprocess.run(
        ["sudo", "-u", "demo", "sbatch", "--parsable", "--account=astro-dev", f"--job-name={slurm.job_name}-dask-1",
         f"--comment={comment}", "--cpus-per-task=1", "--mem=64M", "--time=1", "--chdir=/tmp",
         "--output=/dev/null", "--wrap=sleep 2"], capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    try:
        demo.start_server("demo", timeout=120, options={"partition": "cpu", "cores": 2, "memory_gb": 1,
                                                        "account": "astro-dev"})
        job_id = slurm.jobs()["demo"]["job_id"]
        time.sleep(3)  # a few core-seconds to count
    finally:
        demo.ensure_stopped("demo")
    for job in (job_id, worker):
        wait_for(lambda: sacct("-j", job, "--format=State")[0][0] not in ("RUNNING", "PENDING"), 60,
                 what=f"job {job} to end in sacct")
    (user, account, name, comment, cpus), = sacct("-j", job_id, "--format=User,Account,JobName,Comment,AllocCPUS")
    assert (user, account, name, cpus) == ("demo", "astro-dev", slurm.job_name, "2")
    assert comment in ("", "science-gateway=science-gateway user=demo")

    ended = max(sacct("-j", job, "--format=End")[0][0] for job in (job_id, worker))

    def usage_with_the_job():
        r = demo.api("/gateway/usage")
        assert r.status_code == 200, r.text
        body = r.json()
        return body if body["as_of"].replace(" ", "T") >= ended else None

    usage = wait_for(usage_with_the_job, 30, interval=0.5, what="a usage snapshot taken after the job ended")
    assert usage["user"] == "demo" and usage["unix_account"] == "demo"
    # the same window, asked of sacct directly: every job of demo's, per account
    rows = sacct("-u", "demo", *window(usage), "--format=Account,JobName,CPUTimeRAW,JobIDRaw,Comment")
    expected = {}
    for account_name, _name, seconds, _id, _comment in rows:
        expected[account_name] = expected.get(account_name, 0) + int(seconds)
    seen = {a: t["all"]["core_hours"] * 3600 for a, t in usage["by_account"].items()}
    # core-hours come rounded to 4 decimals (0.36 s): equal to within a second per account
    assert {a for a, s in seen.items() if s} == {a for a, s in expected.items() if s}
    assert all(abs(seen[a] - expected[a]) <= 1 for a in expected if expected[a]), (seen, expected)
    # notebook servers: the gateway's comment with nothing but the user (other tests' servers of
    # demo's on the shared Slurm too), or, while a job runs and has no comment yet, the job name
    servers = [(i, int(s)) for a, n, s, i, c in rows if a == "astro-dev" and (
        c.split()[:1] and c.split()[0].startswith("science-gateway=") and len(c.split()) == 2
        or not c and n == slurm.job_name)]
    assert dict(servers)[job_id] >= 2 * 3  # our server: 2 cores for at least 3 s
    notebook = usage["by_account"]["astro-dev"]["notebook"]
    assert abs(notebook["core_hours"] * 3600 - sum(s for _, s in servers)) <= 1 and notebook["jobs"] == len(servers)
    # Dask workers apart: the comment's dask=, or the worker job name while no comment is stored
    workers = [(i, int(s)) for a, n, s, i, c in rows if a == "astro-dev" and (
        "dask=" in c.split()[-1:][0] if c else n.startswith(f"{slurm.job_name}-dask"))]
    assert worker in dict(workers) and dict(workers)[worker] >= 2
    dask = usage["by_account"]["astro-dev"]["dask"]
    assert abs(dask["core_hours"] * 3600 - sum(s for _, s in workers)) <= 1 and dask["jobs"] == len(workers)
    assert usage["by_group"]["astro"]["all"]["jobs"] >= 1
    # what is left of each account demo may charge
    allocations = {a["account"]: a for a in usage["allocations"]}
    assert set(allocations) == {"astro-dev", "astro-2024", "sg-spent", "sg-foreign"}
    assert allocations["astro-dev"]["limit_core_hours"] is None and not allocations["astro-dev"]["refusal"]
    assert allocations["sg-spent"]["spent"] and allocations["sg-spent"]["limit_core_hours"] == round(1 / 60, 4)


def test_spent_and_unassociated_accounts_are_refused_with_the_reason(slurm, hub, accounts):
    demo = login(hub, "demo")
    demo.ensure_stopped("demo")
    form = demo.get("/hub/spawn").text
    assert f'<option value="{accounts["spent"]}" disabled>{accounts["spent"]}: spent: ' in form
    assert f'<option value="{accounts["foreign"]}" disabled>{accounts["foreign"]}: not available' in form
    assert "Your usage since" in form
    before = slurm.calls("sbatch")
    for account, why in ((accounts["spent"], "is spent"), (accounts["foreign"], "no association of your user")):
        r = demo.api("/users/demo/server", method="POST", json={"partition": "cpu", "account": account})
        assert r.status_code == 400, (r.status_code, r.text)
        message = r.json()["message"]
        assert why in message and "accounts you may charge: astro-dev, astro-2024" in message, message
    assert slurm.calls("sbatch") == before
    # Slurm refuses the unassociated account too
    direct = subprocess.run(
        ["sudo", "-u", "demo", "sbatch", "--parsable", f"--account={accounts['foreign']}",
         f"--job-name={slurm.job_name}", "--mem=64M", "--time=1", "--chdir=/tmp", "--output=/dev/null",
         "--wrap=true"], capture_output=True, text=True, timeout=30)
    assert direct.returncode != 0
    assert "Invalid account or account/partition combination" in direct.stderr
    # and holds a job on the spent allocation (GrpTRESMins) in the queue, saying why
    held = subprocess.run(
        ["sudo", "-u", "demo", "sbatch", "--parsable", f"--account={accounts['spent']}",
         f"--job-name={slurm.job_name}", "--mem=64M", "--time=1", "--chdir=/tmp", "--output=/dev/null",
         "--wrap=true"], capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    try:
        def reason():
            return subprocess.run(["squeue", "-h", "-j", held, "-o", "%T %r"], capture_output=True, text=True,
                                  timeout=20).stdout.strip()
        # slurmctld adds up usage once a minute (PriorityCalcPeriod): at most that long after a fresh spend
        wait_for(lambda: reason() == "PENDING AssocGrpCPUMinutesLimit", 90, interval=2,
                 what="Slurm to hold the job on the spent allocation")
    finally:
        subprocess.run(["scancel", held], timeout=30, check=False)


def test_a_user_reads_only_their_own_usage(hub):
    demo, astro1 = login(hub, "demo"), login(hub, "astro1")
    r = demo.api("/gateway/usage/astro1")
    assert r.status_code == 403 and "only its own user's usage" in r.json()["message"]
    assert demo.api("/gateway/usage/demo").json()["user"] == "demo"
    mine = astro1.api("/gateway/usage").json()
    assert mine["user"] == "astro1" and mine["unix_account"] == "astro1"
    # the Python API, with a token scoped like a server's (users:activity for its user)
    token = api_token(astro1, "astro1", note="usage", scopes=["users:activity!user=astro1"])
    environ = {"JUPYTERHUB_API_URL": f"{hub.url}/hub/api", "JUPYTERHUB_API_TOKEN": token}
    assert accounting.usage(environ=environ)["user"] == "astro1"
    with pytest.raises(accounting.AccountingError, match="403"):
        accounting.report("2026-01-01", "2026-01-02", environ=environ)
    bare = api_token(astro1, "astro1", note="no scopes", scopes=["read:users:name!user=astro1"])
    with pytest.raises(accounting.AccountingError, match="may not read astro1's usage"):
        accounting.usage(environ={**environ, "JUPYTERHUB_API_TOKEN": bare})
    assert demo.api("/gateway/accounting/report", params={"start": "2026-01-01", "end": "2026-01-02"}).status_code == 403


def test_the_admin_report_json_and_csv_match_sacct(hub):
    admin = login(hub, "admin")
    today = time.strftime("%Y-%m-%d")
    params = {"start": today, "end": today}
    report = admin.api("/gateway/accounting/report", params=params).json()
    assert report["start"] == today and report["rows"]
    text = admin.api("/gateway/accounting/report", params={**params, "format": "csv"})
    assert text.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(text.text)))
    # CSV and JSON carry the same rows (the CSV may be a little newer: compare the finished part)
    expected = {}
    for user, account, seconds in sacct("-a", "-S", today, "-E", report["as_of"].replace(" ", "T"),
                                        "--format=User,Account,CPUTimeRAW"):
        expected[(user, account)] = expected.get((user, account), 0) + int(seconds)
    seen = {}
    for row in report["rows"]:
        key = (row["user"], row["account"])
        seen[key] = seen.get(key, 0) + row["core_hours"] * 3600
    assert set(seen) == set(expected)
    for key, seconds in expected.items():
        assert abs(seen[key] - seconds) <= 1, key
    vos = {(r["account"], r["vo"]) for r in report["rows"]}
    assert ("astro-dev", "astro") in vos
    assert {(r["vo"], r["account"], r["user"], r["kind"]) for r in rows} >= {
        (r["vo"], r["account"], r["user"], r["kind"]) for r in report["rows"] if r["user"] == "demo"
        and r["account"] == "astro-dev"}
    bad = admin.api("/gateway/accounting/report", params={"start": "yesterday", "end": today})
    assert bad.status_code == 400 and "YYYY-MM-DD" in bad.json()["message"]
    # the same as a page for admins
    page = admin.get(f"/hub/accounting?start={today}&end={today}")
    assert page.status_code == 200 and 'id="sg-accounting"' in page.text
    assert "<td>astro-dev</td>" in page.text and "format=csv" in page.text
    assert login(hub, "demo").get("/hub/accounting").status_code == 403


def test_one_sacct_for_all_users_per_interval(hub, acct_commands):
    """20 usage reads from 4 users at once: at most one sacct (and one sacctmgr) per started
    interval (1 s here), whatever the number of requests."""
    sessions = [login(hub, name) for name in ("demo", "astro1", "astro2", "astro3")]
    before = {name: command.calls() for name, command in acct_commands.items()}
    started = time.monotonic()

    def reads(session):
        return [session.api("/gateway/usage").status_code for _ in range(5)]

    with ThreadPoolExecutor(len(sessions)) as pool:
        codes = [code for result in pool.map(reads, sessions) for code in result]
    elapsed = time.monotonic() - started
    assert codes == [200] * 20
    for name, command in acct_commands.items():
        calls = command.calls() - before[name]
        assert calls <= int(elapsed / 1.0) + 2, (name, calls, elapsed)
