"""When the server's batch job ends: ``GET /gateway/api/session``, for the walltime warning.

A server that runs as a Slurm job (``$SLURM_JOB_ID`` in its environment) ends at the job's
walltime, whatever the user is doing. :class:`JobSession` says when: ``$SLURM_JOB_END_TIME``
(epoch seconds; Slurm 23.02 and later set it in the job's environment), else one
``squeue -h -j JOB -o %e`` (the end time in the cluster's local time), asked again at most every
``refresh`` seconds (the end time moves only when an admin extends the job). Elsewhere (a local or
Kubernetes server) there is no end.
"""

from __future__ import annotations

import asyncio
import datetime
import time

from ..core.clock import utcnow
from ..core.commands import CommandError, run_command


def parse_end_time(text: str) -> float | None:
    """squeue's ``%e`` (``2026-12-06T23:41:00``, local time) as epoch seconds; None for
    ``Unknown``, ``N/A``, ``NONE`` or anything else."""
    try:
        return datetime.datetime.strptime(text.strip(), "%Y-%m-%dT%H:%M:%S").timestamp()
    except ValueError:
        return None


def describe_end(end: float | None, now: float, warn_before: float) -> dict:
    """The answer of ``GET /session`` for a job ending at ``end`` (pure)."""
    if end is None:
        return {"ends": False, "end_time": None, "seconds_left": None, "warning": ""}
    left = max(0, int(end - now))
    warning = ""
    if left <= warn_before:
        at = datetime.datetime.fromtimestamp(end, datetime.timezone.utc).strftime("%H:%M UTC")
        minutes = (left + 59) // 60
        warning = f"Your server's batch job ends in {minutes} minute{'s' if minutes != 1 else ''} ({at}): save your work."
    return {"ends": True, "end_time": end, "seconds_left": left, "warning": warning}


class JobSession:
    """The end time of the batch job this server runs in (see the module docstring)."""

    def __init__(self, environ, *, squeue: str, refresh: float = 300, timeout: float = 10):
        self.environ = environ  # read when asked (the job's variables do not change)
        self.squeue, self.refresh, self.timeout = squeue, refresh, timeout
        self._end: float | None = None
        self._asked = 0.0
        self._lock = asyncio.Lock()

    @property
    def job_id(self) -> str:
        return self.environ.get("SLURM_JOB_ID", "")

    @property
    def scheduler(self) -> str:
        return "slurm" if self.job_id else ""

    async def end_time(self) -> float | None:
        if not self.job_id:
            return None
        end = self.environ.get("SLURM_JOB_END_TIME", "")
        if end.isdigit():
            return float(end)
        async with self._lock:
            if not self._asked or time.monotonic() - self._asked >= self.refresh:
                self._asked = time.monotonic()
                try:
                    result = await run_command([self.squeue, "-h", "-j", self.job_id, "-o", "%e"], timeout=self.timeout)
                except asyncio.CancelledError:
                    raise
                except (CommandError, OSError):
                    return self._end  # the last known end (None: unknown), asked again after refresh
                self._end = parse_end_time(result.stdout)
        return self._end

    async def describe(self, warn_before: float) -> dict:
        return {"scheduler": self.scheduler or None, "job_id": self.job_id or None,
                **describe_end(await self.end_time(), utcnow(), warn_before)}
