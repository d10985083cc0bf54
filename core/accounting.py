"""Usage accounting from the scheduler: one cached query for all users, per interval.

Slurm's accounting (``slurmdbd``) is the record. :class:`SlurmAccounting` (one per hub process,
:func:`shared_accounting`) asks it for every job of the allocation period at once (one ``sacct``)
and for every association and its limits (one ``sacctmgr show associations``), at most every
:attr:`~SlurmAccounting.interval` seconds, and only while someone looks. Every consumer reads that
snapshot: the spawn form (usage and what is left next to the account choice), the policy check of
each spawn (a spent allocation, an account Slurm does not associate with the user: refused with the
reason), and the hub's usage route (a user's own usage, from the Python API). Load on slurmdbd
stays flat in the number of users. The admin report over a date range (:meth:`report`) is one
``sacct`` per report.

Jobs are told apart by what the gateway writes on them: ``--comment`` is
``science-gateway=NAME user=ID`` for a notebook server, Dask worker jobs add ``dask=PRESET`` (any
other key: another gateway job, counted as ``other``)
(``spawners/slurm_script.build_comment``, ``gateway/dask/builders.worker_comment``); with no
comment stored (``AccountingStoreFlags=job_comment`` missing) the job names decide
(:attr:`~SlurmAccounting.notebook_job_name`, :attr:`~SlurmAccounting.dask_job_name`). Other jobs
count as ``other``: they still spend the allocation.

Core-hours are allocated CPUs times elapsed time (sacct's ``CPUTimeRAW``: what Slurm charges, not
what the job used), GPU-hours allocated ``gres/gpu`` times elapsed. An allocation is an account's
``GrpTRESMins`` cpu limit; what is used of it is every job charged to the account since
:attr:`~SlurmAccounting.period_start` (reset Slurm's usage at the same date, see docs/slurm.md).

Pure builders and parsers first (tested with recorded output), the cached component last.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
import time
from dataclasses import dataclass, field

from traitlets import Bool, Float, List, Unicode, validate
from traitlets.config import LoggingConfigurable

from .clock import utcnow
from .commands import CommandError, run_command
from .text import quote_prefix

#: job kinds, in the order they are shown
NOTEBOOK, DASK, OTHER = "notebook", "dask", "other"
KINDS = (NOTEBOOK, DASK, OTHER)

#: sacct fields, in order (Comment last: it is split off whole)
SACCT_FIELDS = ("job_id", "user", "account", "name", "state", "start", "end", "elapsed", "alloc_tres", "comment")
SACCT_FORMAT = "JobIDRaw,User,Account,JobName,State,Start,End,ElapsedRaw,AllocTRES,Comment"
SACCTMGR_FORMAT = "Account,User,GrpTRESMins"
#: a sacct time argument (local time, as sacct reads it)
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2})?)?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def slurm_time(epoch: float) -> str:
    """An epoch time as sacct's ``--starttime``/``--endtime`` reads it (local time)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(epoch))


def check_time(what: str, value: str) -> str:
    """A ``YYYY-MM-DD[THH:MM[:SS]]`` time, or ValueError saying so (the value never reaches a shell,
    but sacct would read other words as its own keywords)."""
    if not isinstance(value, str) or not _TIME.fullmatch(value):
        raise ValueError(f"{what} must be a date YYYY-MM-DD (or YYYY-MM-DDTHH:MM:SS), got {quote_prefix(value)}")
    return value


def build_sacct_argv(sacct: str, start: str, end: str, extra=()) -> list[str]:
    """One ``sacct`` for every job (all users) between ``start`` and ``end``, times cut to that window."""
    return [
        sacct, "--allusers", "--allocations", "--noheader", "--parsable2", "--truncate",
        f"--starttime={check_time('start', start)}", f"--endtime={check_time('end', end)}",
        f"--format={SACCT_FORMAT}", *extra,
    ]


def build_sacctmgr_argv(sacctmgr: str, cluster: str = "") -> list[str]:
    """One ``sacctmgr`` for every association (account, user) and its GrpTRESMins."""
    argv = [sacctmgr, "--noheader", "--parsable2", "show", "associations"]
    if cluster:
        argv += ["where", f"cluster={cluster}"]
    return [*argv, f"format={SACCTMGR_FORMAT}"]


def parse_tres(text: str) -> dict[str, str]:
    """``cpu=2,mem=4G,gres/gpu=1`` -> ``{"cpu": "2", "mem": "4G", "gres/gpu": "1"}``."""
    tres = {}
    for part in (text or "").split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            tres[key.strip()] = value.strip()
    return tres


def _count(value: str) -> int:
    return int(value) if value.isdigit() else 0


def job_kind(name: str, comment: str, notebook_job_name: str, dask_job_name: str) -> str:
    """:data:`NOTEBOOK`, :data:`DASK` or :data:`OTHER`, from the comment the gateway writes, else the name."""
    words = comment.split()
    if words and words[0].startswith("science-gateway="):
        keys = {w.partition("=")[0] for w in words[1:]} - {"user"}
        if "dask" in keys:
            return DASK
        return OTHER if keys else NOTEBOOK  # other gateway jobs (e.g. a notebook run as a batch job)
    if dask_job_name and (name == dask_job_name or name.startswith(dask_job_name + "-")):
        return DASK
    if notebook_job_name and name == notebook_job_name:
        return NOTEBOOK
    return OTHER


@dataclass(frozen=True)
class JobUsage:
    """One job (allocation) as sacct reports it, within the queried window."""

    job_id: str
    user: str
    account: str
    kind: str
    state: str
    cpu_seconds: int
    gpu_seconds: int


def parse_sacct(output: str, notebook_job_name: str = "", dask_job_name: str = "") -> list[JobUsage]:
    """``sacct`` output in :data:`SACCT_FORMAT` -> jobs; odd lines (and job steps) are skipped."""
    jobs = []
    for line in output.splitlines():
        parts = line.rstrip("\n").split("|", len(SACCT_FIELDS) - 1)
        if len(parts) != len(SACCT_FIELDS):
            continue
        row = dict(zip(SACCT_FIELDS, parts))
        if not row["job_id"].replace("_", "").isdigit() or not row["user"]:
            continue
        tres = parse_tres(row["alloc_tres"])
        elapsed = _count(row["elapsed"])
        jobs.append(JobUsage(
            job_id=row["job_id"],
            user=row["user"],
            account=row["account"],
            kind=job_kind(row["name"], row["comment"], notebook_job_name, dask_job_name),
            state=row["state"].split()[0] if row["state"] else "",
            cpu_seconds=elapsed * _count(tres.get("cpu", "0")),
            gpu_seconds=elapsed * _count(tres.get("gres/gpu", "0")),
        ))
    return jobs


def _minutes(tres_mins: str, key: str = "cpu") -> int | None:
    value = parse_tres(tres_mins).get(key)
    return int(value) if value is not None and value.isdigit() else None


def parse_associations(output: str) -> tuple[set[tuple[str, str]], dict[str, int]]:
    """``sacctmgr`` output in :data:`SACCTMGR_FORMAT` -> (``{(user, account)}``, ``{account: cpu limit
    in core-minutes}``): the account's own line (no user) carries the allocation."""
    pairs, limits = set(), {}
    for line in output.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 3 or not parts[0]:
            continue
        account, user, tres_mins = parts
        if user:
            pairs.add((user, account))
        else:
            limit = _minutes(tres_mins)
            if limit is not None:
                limits[account] = limit
    return pairs, limits


def hours(seconds: float) -> float:
    return round(seconds / 3600.0, 4)


def _totals(jobs) -> dict:
    """``{kind: {"jobs", "core_hours", "gpu_hours"}}`` plus ``"all"``."""
    out = {}
    for kind in (*KINDS, "all"):
        picked = [j for j in jobs if kind == "all" or j.kind == kind]
        out[kind] = {
            "jobs": len(picked),
            "core_hours": hours(sum(j.cpu_seconds for j in picked)),
            "gpu_hours": hours(sum(j.gpu_seconds for j in picked)),
        }
    return out


@dataclass(frozen=True)
class AllocationStatus:
    """One account as one user may charge it: associated or not, its allocation, what is left."""

    account: str
    associated: bool
    limit_core_hours: float | None  # None: no allocation limit
    used_core_hours: float
    as_of: str = ""

    @property
    def left_core_hours(self) -> float | None:
        if self.limit_core_hours is None:
            return None
        return round(max(self.limit_core_hours - self.used_core_hours, 0.0), 4)

    @property
    def spent(self) -> bool:
        return self.limit_core_hours is not None and self.used_core_hours >= self.limit_core_hours

    def refusal(self) -> str:
        """Why a job may not be charged to this account ("" when it may)."""
        if not self.associated:
            return (f"account {self.account!r} cannot be charged: Slurm has no association of your user with it "
                    "(it would refuse the job); ask the site admins to add you to it")
        if self.spent:
            return (f"the allocation of account {self.account!r} is spent: {self.used_core_hours:g} of "
                    f"{self.limit_core_hours:g} core-hours used (as of {self.as_of}); choose another account "
                    "or ask your project for more")
        return ""

    def describe(self) -> str:
        """One line for the spawn form."""
        if not self.associated:
            return "not available: you are not associated with this account in Slurm"
        if self.limit_core_hours is None:
            return f"{self.used_core_hours:g} core-hours used, no allocation limit"
        if self.spent:
            return f"spent: {self.used_core_hours:g} of {self.limit_core_hours:g} core-hours used"
        return f"{self.left_core_hours:g} of {self.limit_core_hours:g} core-hours left"

    def as_dict(self) -> dict:
        return {
            "account": self.account, "associated": self.associated, "limit_core_hours": self.limit_core_hours,
            "used_core_hours": self.used_core_hours, "left_core_hours": self.left_core_hours,
            "spent": self.spent, "refusal": self.refusal(),
        }


@dataclass(frozen=True)
class UsageSnapshot:
    """Every job of one window and every association, as one refresh saw them."""

    start: str
    end: str
    jobs: tuple[JobUsage, ...] = ()
    associations: frozenset = frozenset()
    limits: dict = field(default_factory=dict)

    def account_used_core_hours(self, account: str) -> float:
        return hours(sum(j.cpu_seconds for j in self.jobs if j.account == account))

    def allocation(self, account: str, user: str) -> AllocationStatus:
        limit = self.limits.get(account)
        return AllocationStatus(
            account=account,
            associated=(user, account) in self.associations,
            limit_core_hours=None if limit is None else round(limit / 60.0, 4),
            used_core_hours=self.account_used_core_hours(account),
            as_of=self.end.replace("T", " "),
        )

    def allocations(self, user: str, accounts) -> dict[str, AllocationStatus]:
        return {account: self.allocation(account, user) for account in accounts}

    def user_usage(self, user: str) -> dict:
        """One unix user's usage: totals by kind, and by account (each by kind)."""
        mine = [j for j in self.jobs if j.user == user]
        accounts = sorted({j.account for j in mine})
        return {
            "totals": _totals(mine),
            "by_account": {a: _totals([j for j in mine if j.account == a]) for a in accounts},
        }


def report_rows(jobs, vo_of) -> list[dict]:
    """Admin report rows, one per (VO, account, user, kind) with jobs; ``vo_of(user, account)`` names the VO."""
    groups: dict[tuple, list[JobUsage]] = {}
    for job in jobs:
        groups.setdefault((vo_of(job.user, job.account), job.account, job.user, job.kind), []).append(job)
    return [
        {"vo": vo, "account": account, "user": user, "kind": kind, "jobs": len(picked),
         "core_hours": hours(sum(j.cpu_seconds for j in picked)),
         "gpu_hours": hours(sum(j.gpu_seconds for j in picked))}
        for (vo, account, user, kind), picked in sorted(groups.items())
    ]


REPORT_COLUMNS = ("vo", "account", "user", "kind", "jobs", "core_hours", "gpu_hours")


def report_csv(rows) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=REPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row[k] for k in REPORT_COLUMNS})
    return out.getvalue()


class AccountingUnavailable(Exception):
    """The scheduler's accounting did not answer; the message says so in words a user can read."""


class SlurmAccounting(LoggingConfigurable):
    """The hub's one view of Slurm accounting: usage and allocations, cached per interval."""

    enabled = Bool(
        False,
        help="""
        Read usage and allocations from Slurm's accounting (slurmdbd): the spawn form shows them
        next to the account choice, a spawn charged to a spent allocation or to an account Slurm
        does not associate with the user is refused with the reason, users read their own usage
        (``GET /hub/api/gateway/usage``) and admins get a report (docs/slurm.md).
        """,
    ).tag(config=True)
    sacct = Unicode("/usr/bin/sacct", help="Absolute path of sacct.").tag(config=True)
    sacctmgr = Unicode("/usr/bin/sacctmgr", help="Absolute path of sacctmgr (associations and GrpTRESMins).").tag(
        config=True
    )
    cluster = Unicode("", help="Slurm cluster whose associations count (empty: all the database knows).").tag(
        config=True
    )
    extra_args = List(Unicode(), help="Extra sacct arguments (e.g. --clusters=NAME).").tag(config=True)
    interval = Float(
        300,
        help="""
        Seconds a usage snapshot is served before the next one is asked for (one sacct and one
        sacctmgr for all users; only when someone looks). Usage shown is at most this old.
        """,
    ).tag(config=True)
    timeout = Float(30, help="Seconds before an accounting query is given up.").tag(config=True)
    period_start = Unicode(
        "",
        help="""
        First day (YYYY-MM-DD) of the allocation period: usage and what is left of each allocation
        count jobs from then on. Empty: 1 January of the current year (Slurm's
        ``PriorityUsageResetPeriod=YEARLY``). Reset Slurm's own usage at the same date.
        """,
    ).tag(config=True)
    notebook_job_name = Unicode(
        "science-gateway-jupyter",
        help="Job name of notebook servers, for jobs stored without a comment (SlurmSpawner.job_name).",
    ).tag(config=True)
    dask_job_name = Unicode(
        "science-gateway-dask",
        help="Job name (prefix) of Dask worker jobs, for jobs stored without a comment (DaskPresets.job_name).",
    ).tag(config=True)
    max_report_days = Float(3700, help="Longest date range of one admin report, in days.").tag(config=True)

    @validate("period_start")
    def _check_period(self, proposal):
        if proposal.value and not _DATE.fullmatch(proposal.value):
            raise ValueError(f"SlurmAccounting.period_start must be YYYY-MM-DD, got {proposal.value!r}")
        return proposal.value

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._snapshot: UsageSnapshot | None = None
        self._taken = 0.0  # monotonic time of the last good snapshot
        self._inflight: asyncio.Future | None = None
        self.calls = {"sacct": 0, "sacctmgr": 0}  # for tests and the benchmark
        self.last_error = ""

    # -- queries ---------------------------------------------------------------------------

    def window_start(self) -> str:
        if self.period_start:
            return self.period_start
        return time.strftime("%Y-01-01", time.localtime(utcnow()))

    async def _run(self, name: str, argv: list[str]) -> str:
        self.calls[name] += 1
        try:
            result = await run_command(argv, timeout=self.timeout)
        except CommandError as e:
            if e.timed_out:
                raise AccountingUnavailable(f"{name} gave no answer within {self.timeout:g} s") from None
            detail = (e.stderr or e.stdout or str(e)).strip().splitlines()
            raise AccountingUnavailable(f"{name} failed: {quote_prefix(detail[-1] if detail else '', 160)}") from None
        return result.stdout

    async def query_jobs(self, start: str, end: str) -> list[JobUsage]:
        """One sacct for all jobs of the window (any user)."""
        out = await self._run("sacct", build_sacct_argv(self.sacct, start, end, self.extra_args))
        return parse_sacct(out, self.notebook_job_name, self.dask_job_name)

    async def query(self) -> UsageSnapshot:
        start, end = self.window_start(), slurm_time(utcnow())
        jobs = await self.query_jobs(start, end)
        pairs, limits = parse_associations(await self._run("sacctmgr", build_sacctmgr_argv(self.sacctmgr, self.cluster)))
        return UsageSnapshot(start=start, end=end, jobs=tuple(jobs), associations=frozenset(pairs), limits=limits)

    # -- the cache -------------------------------------------------------------------------

    def cached(self) -> UsageSnapshot | None:
        """The last good snapshot (no query); None before the first."""
        return self._snapshot

    async def refresh(self) -> UsageSnapshot | None:
        """Query now, or join the query in flight; the last good snapshot on failure."""
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(self._refresh_once())
        await asyncio.shield(self._inflight)
        return self._snapshot

    async def _refresh_once(self):
        try:
            snapshot = await self.query()
        except asyncio.CancelledError:
            raise
        except AccountingUnavailable as e:
            self.last_error = str(e)
            self.log.warning("Slurm accounting query failed, keeping the last snapshot: %s", e)
            return
        self._snapshot, self._taken, self.last_error = snapshot, time.monotonic(), ""

    async def snapshot(self) -> UsageSnapshot | None:
        """The current snapshot: the cached one while younger than :attr:`interval`, else a new one
        (shared by every caller at that moment). None while accounting has never answered."""
        if self._snapshot is None or time.monotonic() - self._taken >= self.interval:
            await self.refresh()
        return self._snapshot

    # -- the admin report ------------------------------------------------------------------

    async def report(self, start: str, end: str, vo_of) -> dict:
        """Usage per VO, account, user and kind between the dates ``start`` and ``end`` (inclusive)."""
        for what, value in (("start", start), ("end", end)):
            if not isinstance(value, str) or not _DATE.fullmatch(value):
                raise ValueError(f"{what} must be a date YYYY-MM-DD, got {quote_prefix(value)}")
        first = time.mktime(time.strptime(start, "%Y-%m-%d"))
        last = time.mktime(time.strptime(end, "%Y-%m-%d")) + 86400
        if last <= first:
            raise ValueError(f"end {end} is before start {start}")
        if (last - first) / 86400 > self.max_report_days:
            raise ValueError(f"a report covers at most {self.max_report_days:g} days")
        until = min(last, utcnow())
        jobs = await self.query_jobs(slurm_time(first), slurm_time(max(until, first)))
        return {"start": start, "end": end, "as_of": slurm_time(until).replace("T", " "),
                "rows": report_rows(jobs, vo_of)}


_SHARED: dict[str, SlurmAccounting] = {}


def shared_accounting(parent=None, config=None) -> SlurmAccounting:
    """The hub process's one :class:`SlurmAccounting` (configured as ``SlurmAccounting``)."""
    accounting = _SHARED.get("slurm")
    if accounting is None:
        kwargs = {"parent": parent} if parent is not None else {"config": config}
        accounting = _SHARED["slurm"] = SlurmAccounting(**kwargs)
    return accounting
