"""Work in flight counts as activity, so the hub's idle culler leaves the server alone.

The idle culler (``jupyterhub-idle-culler``, configured by ``science_gateway.hub.culling``) stops
a server whose last activity, as the hub knows it, is older than its timeout. jupyterhub-singleuser
reports the server's ``web_app.last_activity()`` to the hub: the latest API request, kernel
message or terminal use, and every web application setting whose name ends in
``_last_activity`` (jupyter_server's hook for extensions). A kernel busy in a long cell that
prints nothing, a Dask cluster with work queued, or a stage-in still copying or recalling from tape
leaves none of those behind, so such a server would look idle.

:class:`ActivityKeeper` checks every ``interval`` seconds whether any of these holds and, while
one does, sets ``science_gateway_last_activity`` to now:

- a kernel whose execution state is ``busy`` (jupyter_server follows each kernel's status);
- a *busy source* another gateway extension registered with
  :func:`science_gateway.core.activity.register_busy_source`
  (``science_gateway.dask.server``: a Dask cluster the server holds; each answers without I/O);
- a stage-in request in flight: the catalogue's bulk status is asked only while some request may
  be in flight (at start, and after a new request, until none is), not every interval.

Whatever holds is also in the metric ``science_gateway_server_busy{reason}``.
"""

from __future__ import annotations

import asyncio
import logging

from ..core.activity import ACTIVITY_KEY, BUSY_SOURCES_KEY, register_busy_source  # noqa: F401
from ..core.catalog import IN_PROGRESS
from ..core.clock import utcnow_datetime

log = logging.getLogger(__name__)


def busy_kernels(kernel_manager) -> int:
    """How many of the server's kernels are executing now."""
    count = 0
    for kernel_id in list(kernel_manager.list_kernel_ids()):
        try:
            kernel = kernel_manager.get_kernel(kernel_id)
        except KeyError:  # shut down meanwhile
            continue
        if getattr(kernel, "execution_state", "") == "busy":
            count += 1
    return count


class ActivityKeeper:
    """Bumps the server's last activity while work is in flight (see the module docstring)."""

    def __init__(self, settings: dict, catalog, metrics, *, interval: float, status_timeout: float = 30):
        self.settings, self.catalog, self.metrics = settings, catalog, metrics
        self.interval, self.status_timeout = interval, status_timeout
        self._staging_may_be_in_flight = True  # requests of an earlier session may still be
        self._task: asyncio.Task | None = None

    def staging_started(self) -> None:
        """A new stage-in request: ask the catalogue at the next checks until it is done."""
        self._staging_may_be_in_flight = True

    async def staging_in_flight(self) -> bool:
        if not self._staging_may_be_in_flight:
            return False
        try:
            requests = await asyncio.wait_for(self.catalog.status(), self.status_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - a catalogue that does not answer: ask again next time
            log.debug("Science Gateway: the catalogue's status for the idle check failed: %s", e)
            return False
        self._staging_may_be_in_flight = any(r.state == IN_PROGRESS for r in requests)
        return self._staging_may_be_in_flight

    async def reasons(self) -> list[str]:
        """What keeps the server active now (empty: nothing)."""
        reasons = []
        kernel_manager = self.settings.get("kernel_manager")
        if kernel_manager is not None and busy_kernels(kernel_manager):
            reasons.append("kernel")
        for name, busy in list(self.settings.get(BUSY_SOURCES_KEY, {}).items()):
            try:
                if busy():
                    reasons.append(name)
            except Exception:  # noqa: BLE001 - one broken source must not stop the others
                log.exception("Science Gateway: the busy source %s failed", name)
        if await self.staging_in_flight():
            reasons.append("staging")
        return reasons

    async def check(self) -> list[str]:
        """One check: bump the last activity if anything is in flight; returns the reasons."""
        reasons = await self.reasons()
        if reasons:
            self.settings[ACTIVITY_KEY] = utcnow_datetime()
        for reason in ("kernel", "staging", *self.settings.get(BUSY_SOURCES_KEY, {})):
            self.metrics.busy.labels(reason).set(1 if reason in reasons else 0)
        return reasons

    def start(self) -> None:
        if self.interval > 0 and self._task is None:
            self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the loop outlives one bad check
                log.exception("Science Gateway: the activity check failed")
            await asyncio.sleep(self.interval)
