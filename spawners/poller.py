"""One query for all users: a shared snapshot of every gateway job, refreshed per interval.

Stock batchspawner runs one ``squeue`` (or ``condor_q``) per server every poll interval, and one
every half second per starting server. Here one poller per hub process (per scheduler and job
name) asks the scheduler for all gateway jobs at once; every spawner's ``poll()``, ``start()`` and
``progress()`` read that snapshot. While some server is starting the snapshot is refreshed every
``fast_interval`` seconds (shared by all starting servers), otherwise every ``interval``. These
settings live on the poller only: ``c.SlurmQueuePoller.interval = 30`` (the spawner has no copies).

:class:`QueuePoller` is the scheduler-neutral machinery; a scheduler's poller implements
:meth:`QueuePoller.query` (one call for all jobs) and may use :meth:`QueuePoller.snapshot_taken`.
:class:`SlurmQueuePoller` runs ``squeue``; the HTCondor spawner's poller
(``science_gateway.spawners.condor.CondorQueuePoller``) asks the schedd through the Python bindings.

Failure rules: a failing or hanging query keeps the last good snapshot (``lookup`` answers from
it, so no live server is dropped); before the first good snapshot, and for a job submitted after
the snapshot was taken, the answer is :data:`UNKNOWN`, which spawners treat as "keep". Concurrent
callers share one query in flight, so a restarted hub polling every server at once makes one
call, not one per server. While the query fails, :meth:`QueuePoller.trouble` says so in words a
user can read (the spawn page shows it).

Nodes (Slurm): when a watched job pends for a reason that says its nodes are unavailable
(``ReqNodeNotAvail``, ...), the same refresh runs one ``sinfo`` for those jobs' partitions, and
:meth:`SlurmQueuePoller.nodes_unavailable` tells a spawner that no node of its partition takes jobs
(drained, down, ...) and why (the node's reason, e.g. ``Kill task failed``). Nothing calls ``sinfo``
while no job waits like that.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone

from traitlets import Float, Integer, List, Unicode
from traitlets.config import LoggingConfigurable

from ..core.commands import CommandError, run_command
from ..core.metrics import hub_metrics
from ..core.text import quote_prefix
from .slurm_script import (
    JobInfo,
    NodeInfo,
    build_sinfo_argv,
    build_squeue_argv,
    parse_sinfo,
    parse_squeue,
    unavailable_nodes,
    waits_for_nodes,
)

#: lookup() answer when the poller cannot tell (no good snapshot yet, or the job is newer than it)
UNKNOWN = object()


class QueryFailed(Exception):
    """A poller's query failed; ``message`` says how, in words a user can read."""

    def __init__(self, message: str, detail: object = None):
        super().__init__(message)
        self.message = message
        self.detail = detail if detail is not None else message


class QueuePoller(LoggingConfigurable):
    """A shared, periodically refreshed view of all jobs named :attr:`job_name` (any scheduler).

    Subclasses implement :meth:`query`; they set :attr:`scheduler` and :attr:`query_name` (the
    words of log lines and of :meth:`trouble`)."""

    #: the scheduler's name, as users read it
    scheduler = "the scheduler"
    #: the query's name, in log lines ("squeue", "the schedd query")
    query_name = "the queue query"
    #: the ``command`` label of its calls in the hub's metrics
    metrics_command = "query"

    job_name = Unicode(help="The job name all gateway jobs carry (the one query filters on it).").tag(config=True)
    interval = Float(30, help="Seconds between refreshes while no server is starting.").tag(config=True)
    fast_interval = Float(1, help="Seconds between refreshes while some server is starting.").tag(config=True)
    timeout = Float(20, help="Seconds before a queue query is given up and counted as failed.").tag(config=True)
    max_failures_logged = Integer(
        3, help="Consecutive query failures logged as warnings before they are logged at debug."
    ).tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._jobs: dict = {}
        self._snapshot_started: float | None = None  # wall time when the last good query began
        self._watched: dict[str, float] = {}  # job id -> wall time of submission (0: unknown)
        self._starting: set[str] = set()
        self._inflight: asyncio.Future | None = None
        self._wake: asyncio.Event | None = None
        self._refreshed = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._last_attempt = 0.0
        self._failures = 0
        self._failing_since: float | None = None  # wall time of the first failure in a row
        self.calls = 0  # queries made, for the benchmark and tests
        self.last_error = ""

    # -- what a scheduler's poller implements ---------------------------------------------------

    async def query(self) -> dict:
        """Every gateway job the scheduler knows: ``{job_id: info}``; QueryFailed if it cannot tell."""
        raise NotImplementedError(f"{type(self).__name__} must implement query")

    async def snapshot_taken(self):
        """Called after each good snapshot (e.g. Slurm's node check)."""

    def snapshot_failed(self):
        """Called after each failed query."""

    # -- what spawners call -------------------------------------------------------------------

    def watch(self, job_id: str, submitted_at: float = 0.0, starting: bool = False):
        """Keep ``job_id`` in view; ``starting`` asks for fast refreshes until :meth:`started`."""
        self._watched[job_id] = submitted_at
        if starting:
            self._starting.add(job_id)
        self._ensure_loop()
        self._wake.set()

    def watching(self, job_id: str) -> bool:
        return job_id in self._watched

    def started(self, job_id: str):
        self._starting.discard(job_id)

    def unwatch(self, job_id: str):
        self._watched.pop(job_id, None)
        self._starting.discard(job_id)
        if self._wake is not None:
            self._wake.set()  # lets the loop end when nothing is watched

    async def lookup(self, job_id: str):
        """The job's info, ``None`` if the scheduler no longer knows it, or :data:`UNKNOWN`."""
        if self._snapshot_started is None:
            await self.refresh()
        if self._snapshot_started is None:
            return UNKNOWN
        info = self._jobs.get(job_id)
        if info is not None:
            return info
        if self._watched.get(job_id, 0.0) >= self._snapshot_started:
            return UNKNOWN  # submitted after the snapshot began: it cannot be in it yet
        return None

    def trouble(self) -> str:
        """What a user should read while the query fails (``""`` while it answers)."""
        if self._failing_since is None:
            return ""
        since = datetime.fromtimestamp(self._failing_since, timezone.utc).strftime("%H:%M:%S UTC")
        return (
            f"{self.scheduler} is not answering since {since} ({self.last_error}). No server is stopped for this: "
            f"what you see is what {self.scheduler} last said, and the gateway keeps asking"
        )

    async def next_snapshot(self, timeout: float):
        """Wait (at most ``timeout`` s) until the next refresh attempt has finished."""
        self._ensure_loop()
        event = self._refreshed
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    async def refresh(self):
        """Run one query now, or join the one in flight."""
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._refresh_once())
        future = self._inflight
        try:
            await asyncio.shield(future)
        finally:
            if self._inflight is future and future.done():
                self._inflight = None

    # -- the loop ---------------------------------------------------------------------------

    async def _refresh_once(self):
        try:
            await self._run_query()
        finally:
            event, self._refreshed = self._refreshed, asyncio.Event()
            event.set()

    async def _run_query(self):
        started = time.time()
        self._last_attempt = time.monotonic()
        self.calls += 1
        metrics = hub_metrics()
        metrics.poller_calls.labels(self.metrics_command).inc()
        try:
            jobs = await self.query()
        except asyncio.CancelledError:
            raise
        except QueryFailed as e:
            metrics.poller_errors.labels(self.metrics_command).inc()
            self._failures += 1
            if self._failing_since is None:
                self._failing_since = started
            self.last_error = e.message
            self.snapshot_failed()
            log = self.log.warning if self._failures <= self.max_failures_logged else self.log.debug
            log("%s failed (%d in a row), keeping the last snapshot: %s", self.query_name, self._failures, e.detail)
            return
        self._jobs = jobs
        self._snapshot_started = started
        self.log.debug("%s: %d gateway jobs", self.query_name, len(jobs))
        if self._failing_since is not None:
            self.log.info("%s answers again after %d failures", self.query_name, self._failures)
        self._failures = 0
        self._failing_since = None
        self.last_error = ""
        await self.snapshot_taken()

    def _ensure_loop(self):
        if self._wake is None:
            self._wake = asyncio.Event()
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._loop())

    async def _loop(self):
        while self._watched:
            delay = self.fast_interval if self._starting else self.interval
            due = self._last_attempt + delay - time.monotonic()
            if due > 0:
                # sleep until due, or until watch() wakes us (a new start shortens the delay)
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), due)
                except asyncio.TimeoutError:
                    pass
                continue
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("Unexpected error refreshing the %s queue snapshot", self.scheduler)
        self._task = None


class SlurmQueuePoller(QueuePoller):
    """A shared, periodically refreshed view of all Slurm jobs named :attr:`job_name` (one squeue)."""

    scheduler = "Slurm"
    query_name = "squeue"
    metrics_command = "squeue"

    squeue = Unicode(
        "/usr/bin/squeue",
        help="Absolute path of squeue (or of a wrapper that runs it, e.g. to reach another cluster).",
    ).tag(config=True)
    sinfo = Unicode(
        "/usr/bin/sinfo",
        help="""
        Absolute path of sinfo, run (once per refresh, for all jobs) only while some watched job
        pends because its nodes are unavailable, to tell the user which node and why.
        """,
    ).tag(config=True)
    extra_args = List(Unicode(), help="Extra squeue arguments (e.g. --clusters=NAME).").tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._nodes: dict[str, list[NodeInfo]] = {}  # partition -> nodes, from the last sinfo
        self.sinfo_calls = 0

    def nodes_unavailable(self, info) -> str:
        """For a pending job whose partition has no node that takes jobs: which nodes and why."""
        if not isinstance(info, JobInfo) or not info.pending or not waits_for_nodes(info.reason):
            return ""
        return unavailable_nodes(self._nodes.get(info.partition, []))

    def argv(self) -> list[str]:
        return build_squeue_argv(self.squeue, self.job_name) + list(self.extra_args)

    async def query(self) -> dict[str, JobInfo]:
        try:
            result = await run_command(self.argv(), timeout=self.timeout)
        except CommandError as e:
            if e.timed_out:
                message = f"squeue gave no answer within {self.timeout:g} s"
            else:
                detail = (e.stderr or e.stdout or str(e)).strip().splitlines()
                message = f"squeue failed: {quote_prefix(detail[-1] if detail else '', 160)}"
            raise QueryFailed(message, e) from None
        return parse_squeue(result.stdout)

    def snapshot_failed(self):
        self._nodes = {}  # node states are as old as the snapshot: unknown, and never fail a spawn

    async def snapshot_taken(self):
        await self._refresh_nodes()

    async def _refresh_nodes(self):
        """One sinfo for the partitions of watched jobs that wait for unavailable nodes."""
        partitions = {
            info.partition
            for job_id, info in self._jobs.items()
            if job_id in self._watched and info.pending and waits_for_nodes(info.reason) and info.partition
        }
        if not partitions:
            self._nodes = {}
            return
        self.sinfo_calls += 1
        metrics = hub_metrics()
        metrics.poller_calls.labels("sinfo").inc()
        try:
            result = await run_command(build_sinfo_argv(self.sinfo, partitions), timeout=self.timeout)
        except asyncio.CancelledError:
            raise
        except (CommandError, ValueError) as e:
            metrics.poller_errors.labels("sinfo").inc()
            self._nodes = {}  # unknown nodes never fail a spawn
            self.log.warning("sinfo failed; node states unknown: %s", e)
            return
        self._nodes = parse_sinfo(result.stdout)


_POLLERS: dict[tuple[type, str], QueuePoller] = {}


def shared_poller(*, job_name: str, parent=None, cls: type = SlurmQueuePoller):
    """The one poller (of class ``cls``) of this hub process for ``job_name``; created on first use.

    Its settings (``squeue``, ``interval``, ``fast_interval``, ``timeout``, ...) come from the
    config of that class only (``c.SlurmQueuePoller.interval = 30``).
    """
    poller = _POLLERS.get((cls, job_name))
    if poller is None:
        poller = _POLLERS[(cls, job_name)] = cls(parent=parent, job_name=job_name)
    return poller
