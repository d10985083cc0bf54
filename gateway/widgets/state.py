"""What the widgets show, as plain Python: tested without a browser, rendered by the views.

The widgets are views over the Python API (:mod:`science_gateway.catalog`); these classes hold
their state and turn API answers and errors into what a person reads. No ipywidgets here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.catalog import FAILED, READY, Dataset, StageRequest


def error_text(error: Exception) -> str:
    """One readable line for an error from the gateway (never a traceback)."""
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return message[:1].upper() + message[1:]


def human_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} PB"  # pragma: no cover - the loop returns at TB


def availability_text(dataset: Dataset) -> str:
    return {"disk": "available now", "tape": "on tape"}.get(dataset.availability, "unknown")


@dataclass
class BrowserState:
    """The dataset browser: a query and its results, shown one batch at a time.

    Results are fetched from the gateway one page (``batch_size``) at a time, when the person
    moves forward; only the current batch is rendered, so 1,000 results cost no more than 50.
    Each page is asked for ``partial``: it shows as soon as sizes and availability are known, and
    :meth:`complete` then fetches the metadata the catalogue had not sent yet.
    """

    batch_size: int = 50
    results: list[Dataset] = field(default_factory=list)
    next_page: str | None = None
    offset: int = 0
    error: str = ""
    searched: bool = False
    _query: tuple = ("*", "")
    #: (page token, index of its first result) of fetched pages with metadata still pending
    _pending: list = field(default_factory=list)

    def _fetch(self, catalog, page: str | None, partial: bool = True):
        return catalog.search(self._query[0], filters=self._query[1] or None, limit=self.batch_size, page=page,
                              partial=partial)

    def _note_pending(self, page: str | None, start: int, datasets) -> None:
        if any(d.metadata_pending for d in datasets):
            self._pending.append((page, start))

    def run_search(self, catalog, pattern: str, filters: str) -> None:
        """Start a new search; an error becomes :attr:`error` and the old results stay."""
        query = (pattern.strip() or "*", filters.strip())
        try:
            page = catalog.search(query[0], filters=query[1] or None, limit=self.batch_size, partial=True)
        except Exception as e:  # the API's errors are for people: show them, never raise
            self.error = error_text(e)
            return
        self.error, self.searched, self._query = "", True, query
        self.results, self.next_page, self.offset = list(page.datasets), page.next, 0
        self._pending = []
        self._note_pending(None, 0, page.datasets)

    def complete(self, catalog) -> bool:
        """Fetch the metadata that fetched pages still miss (the same search again, not partial:
        the gateway has the rest cached or on its way). True when a result changed."""
        changed = False
        pending, self._pending = self._pending, []
        for token, start in pending:
            try:
                page = self._fetch(catalog, token, partial=False)
            except Exception:  # keep what is shown: the sizes and availability are there already
                continue
            fresh = {d.did: d for d in page.datasets}
            for i in range(start, min(start + self.batch_size, len(self.results))):
                found = fresh.get(self.results[i].did)
                if found is not None and found != self.results[i]:
                    self.results[i], changed = found, True
        return changed

    def forward(self, catalog) -> None:
        """The next batch, fetching the next page from the gateway when it is not here yet."""
        if self.offset + self.batch_size >= len(self.results) and self.next_page:
            try:
                page = self._fetch(catalog, self.next_page)
            except Exception as e:
                self.error = error_text(e)
                return
            self._note_pending(self.next_page, len(self.results), page.datasets)
            self.results.extend(page.datasets)
            self.next_page = page.next
        if self.offset + self.batch_size < len(self.results):
            self.offset += self.batch_size
        self.error = ""

    def back(self) -> None:
        self.offset = max(0, self.offset - self.batch_size)

    @property
    def can_forward(self) -> bool:
        return self.offset + self.batch_size < len(self.results) or bool(self.next_page)

    @property
    def can_back(self) -> bool:
        return self.offset > 0

    def visible(self) -> list[Dataset]:
        return self.results[self.offset : self.offset + self.batch_size]

    def status(self) -> str:
        if not self.searched:
            return "Search by name pattern and metadata, e.g. project=run2024, datatype=RAW."
        if not self.results:
            return "No datasets match."
        last = self.offset + len(self.visible())
        total = f"{len(self.results)}+" if self.next_page else str(len(self.results))
        return f"Datasets {self.offset + 1}-{last} of {total}."


def status_notice(catalog, requests: list[StageRequest]) -> str:
    """Why the status shown is not fresh ("" when it is): the answer's notice, or a request's."""
    return getattr(catalog, "notice", "") or next((r.notice for r in requests if r.notice), "")


def requests_snapshot(requests: list[StageRequest], error: str = "") -> tuple:
    """What the monitor shows, in a form that compares equal when nothing a person sees changed."""
    return (error,) + tuple(
        (r.id, r.state, r.files_done, r.files_in_flight, r.files_failed, len(r.paths)) for r in requests
    )


@dataclass
class PollSchedule:
    """When the staging monitor asks the gateway again (pure; the monitor's thread follows it).

    It polls only while a view of the monitor is displayed (``view_count`` from the front end;
    ``None`` means the front end does not count views, so polling goes on), every ``interval``
    seconds after a change, doubling up to ``max_interval`` while nothing changes, and at
    ``max_interval`` while no request is in progress.
    """

    interval: float = 2.0
    max_interval: float = 30.0
    delay: float = 2.0
    _last: tuple | None = None

    def __post_init__(self):
        self.delay = self.interval

    def polled(self, snapshot: tuple, in_progress: bool = True) -> float:
        """Note one poll's answer; returns the delay before the next one."""
        if snapshot != self._last:
            self._last = snapshot
            self.delay = self.interval if in_progress else self.max_interval
        else:
            self.delay = min(self.delay * 2, self.max_interval)
        return self.delay

    def changed(self) -> None:
        """Something happened here (a stage, a cancel, a view shown again): poll soon."""
        self.delay = self.interval

    def next_wait(self, view_count: int | None) -> float | None:
        """Seconds until the next poll, or None: no view shows the monitor, do not poll."""
        if view_count is not None and view_count <= 0:
            return None
        return self.delay


@dataclass(frozen=True)
class RequestView:
    """How one stage-in request reads in the monitor."""

    did: str
    words: str
    done: int
    total: int
    bar_style: str
    failed: list[str]
    paths: list[str]
    can_cancel: bool


def request_view(request: StageRequest) -> RequestView:
    """State in words: "recalling from tape", "copying", "ready" or "stuck: <reason>"."""
    failed = [f"{f.did}: {f.reason}" for f in request.failed]
    if request.state == READY:
        words, style = "ready", "success"
    elif request.state == FAILED or (request.failed and not request.files_in_flight):
        reason = request.failed[0].reason if request.failed else (request.message or "no reason given")
        words, style = f"stuck: {reason}", "danger"
    elif request.tape_recall:
        words, style = "recalling from tape", "info"
    else:
        words, style = "copying", "info"
    if request.state != READY and request.files_total:
        words += f" ({request.files_done} of {request.files_total} files)"
    if request.bytes_total:
        words += f", {human_bytes(request.bytes_total)}"
    return RequestView(
        did=request.did,
        words=words,
        done=request.files_done,
        total=max(request.files_total, 1),
        bar_style=style,
        failed=failed,
        paths=list(request.paths),
        can_cancel=not request.done,
    )


def preset_label(name: str, preset: dict) -> str:
    """How a Dask preset reads in the launcher's dropdown."""
    size = f"{preset['cores']} core{'s' if preset['cores'] != 1 else ''}, {preset['memory_gb']} GB per worker"
    return f"{name}: {preset.get('description') or size}"


def preset_options(described: dict) -> list[tuple[str, str]]:
    """``(label, name)`` of the presets this user may use, from ``science_gateway.dask.presets()``,
    smallest workers first (what most people should start with)."""
    presets = sorted(described.get("presets", {}).items(), key=lambda kv: (kv[1]["cores"], kv[1]["memory_gb"], kv[0]))
    return [(preset_label(name, p), name) for name, p in presets]


def preset_limit(described: dict, name: str) -> int:
    """The most workers one cluster of preset ``name`` may have for this user."""
    preset = described["presets"][name]
    return max(0, min(preset["max_workers"], described.get("max_workers", preset["max_workers"])))


def no_presets_text(described: dict) -> str:
    return (
        "You may not start Dask clusters on this gateway: none of your groups is allowed Dask workers. "
        "Ask the gateway admins."
        if not described.get("presets")
        else ""
    )


def workers_text(connected: int, requested: int, adaptive: tuple[int, int] | None = None) -> str:
    """The launcher's live line, e.g. "2 of 4 workers connected" or "adapting 0-8: 3 connected"."""
    if adaptive is not None:
        return f"Adapting between {adaptive[0]} and {adaptive[1]} workers: {connected} connected, {requested} requested."
    if requested == 0 and connected == 0:
        return "No workers: scale up to start some."
    return f"{connected} of {requested} worker{'s' if requested != 1 else ''} connected."
