"""Pure parts of the accounting: sacct/sacctmgr argv and parsers (recorded output of the test
cluster's Slurm 22.05), allocation arithmetic, the policy's refusal and the form's account list."""

import pytest
from science_gateway.core.accounting import (
    DASK, NOTEBOOK, OTHER, AllocationStatus, UsageSnapshot, build_sacct_argv, build_sacctmgr_argv, job_kind,
    parse_associations, parse_sacct, report_csv, report_rows,
)
from science_gateway.core.policy import PolicyError, ResourcePolicy
from science_gateway.spawners.form import render_form

#: sacct --allusers --allocations --noheader --parsable2 --truncate --format=... on the test cluster
#: (one GPU job and one array task added by hand: the test node has no GPU)
SACCT = """\
1|root|root|true|COMPLETED|2026-12-07T23:19:09|2026-12-07T23:19:09|0|billing=1,cpu=1,mem=64M,node=1|
2|demo|astro-dev|wrap|COMPLETED|2026-12-07T23:19:14|2026-12-07T23:19:16|2|billing=1,cpu=1,mem=64M,node=1|science-gateway=x user=demo
3|demo|sg-spent|sg-spend|COMPLETED|2026-12-07T23:19:29|2026-12-07T23:20:00|31|billing=2,cpu=2,mem=64M,node=1|
4|demo|astro-dev|sgtest-238c4415|RUNNING|2026-12-07T23:21:58|2026-12-07T23:22:26|28|billing=1,cpu=1,mem=2G,node=1|
5|demo|astro-dev|sgtest-238c4415-nb|COMPLETED|2026-12-07T23:22:06|2026-12-07T23:22:10|4|billing=1,cpu=1,mem=2G,node=1|science-gateway=science-gateway user=demo notebook=20261207-232206-14f9f2
11|astro1|astro-2024|science-gateway-dask-4|CANCELLED by 1004|2026-12-07T23:30:00|2026-12-07T23:40:00|600|billing=2,cpu=2,mem=4G,node=1|science-gateway=science-gateway user=astro1 dask=small
12_3|astro1|gpu-2024|train|COMPLETED|2026-12-07T23:30:00|2026-12-07T23:31:00|60|billing=4,cpu=4,gres/gpu=2,mem=8G,node=1|a|b with a bar
13|astro2|astro-2024|science-gateway-jupyter|PENDING|Unknown|Unknown|0||
garbage line
"""

SACCTMGR = """\
root||
root|root|
astro-2024||cpu=6000
astro-2024|astro1|
astro-dev||
astro-dev|demo|
sg-spent||cpu=1
sg-spent|demo|
sg-foreign||
"""


def jobs():
    return parse_sacct(SACCT, notebook_job_name="sgtest-238c4415", dask_job_name="science-gateway-dask")


def test_sacct_and_sacctmgr_argv_are_one_call_each_for_everybody():
    argv = build_sacct_argv("/usr/bin/sacct", "2026-01-01", "2026-12-07T23:00:00")
    assert argv[:6] == ["/usr/bin/sacct", "--allusers", "--allocations", "--noheader", "--parsable2", "--truncate"]
    assert "--starttime=2026-01-01" in argv and "--endtime=2026-12-07T23:00:00" in argv
    assert not any(a.startswith(("--user", "-u")) for a in argv)
    with pytest.raises(ValueError, match="start must be a date"):
        build_sacct_argv("/usr/bin/sacct", "now-1days --uid=0", "2026-12-07")
    assert build_sacctmgr_argv("/usr/bin/sacctmgr", "sgcluster")[-3:] == [
        "where", "cluster=sgcluster", "format=Account,User,GrpTRESMins"]


@pytest.mark.parametrize("name, comment, kind", [
    pytest.param("anything", "science-gateway=sg user=demo", NOTEBOOK, id="server-by-comment"),
    pytest.param("anything", "science-gateway=sg user=demo dask=small", DASK, id="dask-by-comment"),
    pytest.param("x", "science-gateway=sg user=demo notebook=2026", OTHER, id="other-gateway-job"),
    pytest.param("science-gateway-jupyter", "", NOTEBOOK, id="server-by-name"),
    pytest.param("science-gateway-dask-1234", "", DASK, id="dask-by-name-prefix"),
    pytest.param("science-gateway-dasky", "", OTHER, id="not-a-dask-prefix"),
    pytest.param("wrap", "user=demo", OTHER, id="plain-job"),
])
def test_job_kinds(name, comment, kind):
    assert job_kind(name, comment, "science-gateway-jupyter", "science-gateway-dask") == kind


def test_parse_sacct_counts_allocated_core_and_gpu_seconds():
    by_id = {j.job_id: j for j in jobs()}
    assert set(by_id) == {"1", "2", "3", "4", "5", "11", "12_3", "13"}
    assert by_id["3"].cpu_seconds == 62 and by_id["3"].account == "sg-spent"
    assert by_id["4"].kind == NOTEBOOK and by_id["4"].state == "RUNNING" and by_id["4"].cpu_seconds == 28
    assert by_id["11"].kind == DASK and by_id["11"].cpu_seconds == 1200 and by_id["11"].state == "CANCELLED"
    assert (by_id["12_3"].cpu_seconds, by_id["12_3"].gpu_seconds) == (240, 120)
    assert by_id["13"].cpu_seconds == 0


def test_parse_associations():
    pairs, limits = parse_associations(SACCTMGR)
    assert ("demo", "sg-spent") in pairs and ("demo", "sg-foreign") not in pairs
    assert limits == {"astro-2024": 6000, "sg-spent": 1}


def snapshot():
    pairs, limits = parse_associations(SACCTMGR)
    return UsageSnapshot(start="2026-01-01", end="2026-12-07T23:50:00", jobs=tuple(jobs()),
                         associations=frozenset(pairs), limits=limits)


def test_allocations_and_user_usage():
    snap = snapshot()
    spent = snap.allocation("sg-spent", "demo")
    assert spent.spent and spent.limit_core_hours == round(1 / 60, 4) and "spent" in spent.refusal()
    foreign = snap.allocation("sg-foreign", "demo")
    assert not foreign.associated and "no association" in foreign.refusal()
    astro = snap.allocation("astro-2024", "astro1")
    assert astro.limit_core_hours == 100 and astro.used_core_hours == round(1200 / 3600, 4)
    assert astro.left_core_hours == round(100 - 1200 / 3600, 4) and astro.refusal() == ""
    usage = snap.user_usage("astro1")
    assert usage["totals"]["dask"]["core_hours"] == round(1200 / 3600, 4)
    assert usage["totals"]["other"]["gpu_hours"] == round(120 / 3600, 4)
    assert usage["totals"]["notebook"]["jobs"] == 0 and set(usage["by_account"]) == {"astro-2024", "gpu-2024"}
    assert snap.user_usage("demo")["totals"]["notebook"]["core_hours"] == round(30 / 3600, 4)


POLICY = {"astro": {"accounts": ["sg-spent", "astro-dev", "sg-foreign"], "partitions": {"cpu": {"max_cores": 2}}}}


def test_the_policy_refuses_spent_and_unassociated_accounts_and_defaults_to_a_chargeable_one():
    policy = ResourcePolicy(groups=POLICY)
    allocations = snapshot().allocations("demo", ["sg-spent", "astro-dev", "sg-foreign"])
    with pytest.raises(PolicyError, match=r"allocation of account 'sg-spent' is spent.*charge: astro-dev"):
        policy.validate(["astro"], {"account": "sg-spent"}, allocations=allocations)
    with pytest.raises(PolicyError, match="no association of your user"):
        policy.validate(["astro"], {"account": "sg-foreign"}, allocations=allocations)
    assert policy.validate(["astro"], {}, allocations=allocations).account == "astro-dev"
    # without accounting nothing changes
    assert policy.validate(["astro"], {"account": "sg-spent"}).account == "sg-spent"


def test_the_form_shows_what_is_left_and_disables_refused_accounts():
    policy = ResourcePolicy(groups=POLICY)
    snap = snapshot()
    allocations = snap.allocations("demo", ["sg-spent", "astro-dev", "sg-foreign"])
    current = policy.validate(["astro"], {}, allocations=allocations)
    usage = {"since": snap.start, "as_of": "2026-12-07 23:50:00", **snap.user_usage("demo")}
    html = render_form(policy.choices(["astro"]), current, allocations=allocations, usage=usage)
    assert '<option value="sg-spent" disabled>sg-spent: spent: ' in html
    assert '<option value="sg-foreign" disabled>sg-foreign: not available' in html
    assert '<option value="astro-dev" selected>astro-dev: ' in html and "no allocation limit" in html
    assert "Your usage since 2026-01-01: notebooks 0.0083, Dask workers 0, other jobs 0.0183 core-hours" in html


def test_report_rows_and_csv():
    rows = report_rows(jobs(), lambda user, account: {"astro-2024": "astro"}.get(account, "-"))
    dask = [r for r in rows if r["kind"] == DASK]
    assert dask == [{"vo": "astro", "account": "astro-2024", "user": "astro1", "kind": "dask", "jobs": 1,
                     "core_hours": 0.3333, "gpu_hours": 0.0}]
    text = report_csv(rows)
    assert text.splitlines()[0] == "vo,account,user,kind,jobs,core_hours,gpu_hours"
    assert "astro,astro-2024,astro1,dask,1,0.3333,0.0" in text.splitlines()


def test_allocation_status_without_limit():
    status = AllocationStatus("x", associated=True, limit_core_hours=None, used_core_hours=2.5)
    assert not status.spent and status.left_core_hours is None and status.refusal() == ""
