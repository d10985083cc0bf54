"""The ipywidgets views: a dataset browser, a staging monitor and a Dask cluster launcher.

Each is one line in a cell::

    from science_gateway.widgets import DatasetBrowser, StagingMonitor
    DatasetBrowser()      # search, a Stage button per result, and a staging monitor under it
    ClusterLauncher()     # a Dask cluster from a preset: scale/adapt within limits, dashboard link
    PublishPanel(inputs=[...], notebook="analysis.ipynb")   # publish outputs, export an RO-Crate

Errors from the gateway appear in the widget as readable messages, never as tracebacks.
"""

from __future__ import annotations

import html
import threading

import ipywidgets as w

from .state import (
    BrowserState,
    PollSchedule,
    availability_text,
    error_text,
    human_bytes,
    no_presets_text,
    preset_limit,
    preset_options,
    request_view,
    requests_snapshot,
    status_notice,
    workers_text,
)
from ..core.catalog import IN_PROGRESS


def _catalog(catalog):
    if catalog is not None:
        return catalog
    from .. import catalog as api

    return api.default()


def _error_html(message: str) -> str:
    return f'<div class="sg-error" style="color:#b00020">&#9888; {html.escape(message)}</div>' if message else ""


def _notice_html(message: str) -> str:
    """A notice (the status is not fresh): shown above the requests, which stay as they were."""
    return f'<div class="sg-notice" style="color:#8a5300">&#9888; {html.escape(message)}</div>' if message else ""


def _metadata_text(metadata: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(metadata.items()))


class StagingMonitor(w.VBox):
    """One progress bar per stage-in request, its state in words, failures, Cancel, and paths.

    It refreshes in the background only while it is displayed (the front end counts its views),
    every ``interval`` seconds after a change and backing off to ``max_interval`` while nothing
    changes (see :class:`~science_gateway.widgets.state.PollSchedule`); a closed tab stops it.
    """

    def __init__(self, catalog=None, interval: float = 2.0, autostart: bool = True, max_interval: float = 30.0, **kwargs):
        self.catalog = _catalog(catalog)
        self.interval = interval
        self.schedule = PollSchedule(interval=interval, max_interval=max(max_interval, interval))
        self.error = w.HTML()
        self.empty = w.HTML("<i>No stage-in requests yet.</i>")
        self._rows: dict[str, _RequestRow] = {}
        self._requests: dict = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        super().__init__(children=[self.error, self.empty], **kwargs)
        self.add_class("sg-staging-monitor")
        # 0, not None: the front end counts the views that display this widget
        self._view_count = 0
        self.observe(self._views_changed, names="_view_count")
        self.refresh()
        if autostart:
            self.start()

    # -- what a notebook uses ---------------------------------------------------------------------

    @property
    def requests(self) -> list:
        return list(self._requests.values())

    @property
    def paths(self) -> dict[str, list[str]]:
        """``{did: [local paths of the files ready now]}`` for every request."""
        return {r.did: list(r.paths) for r in self._requests.values()}

    def refresh(self) -> float:
        """One bulk status call for all requests, then update the rows in place.

        Returns the delay before the next background refresh."""
        try:
            requests = self.catalog.requests()
        except Exception as e:
            self.error.value = _error_html(error_text(e))
            return self.schedule.polled(requests_snapshot(list(self._requests.values()), self.error.value))
        self.error.value = _notice_html(status_notice(self.catalog, requests))
        self._requests = {r.id: r for r in requests}
        for request_id in list(self._rows):
            if request_id not in self._requests:
                del self._rows[request_id]
        for request in requests:
            row = self._rows.get(request.id)
            if row is None:
                row = self._rows[request.id] = _RequestRow(self, request.id)
            row.update(request_view(request))
        self.children = [self.error] + ([r.box for r in self._rows.values()] or [self.empty])
        return self.schedule.polled(requests_snapshot(requests, self.error.value), any(r.state == IN_PROGRESS for r in requests))

    def poke(self) -> None:
        """Something changed here (a stage, a cancel): refresh soon and follow it closely."""
        self.schedule.changed()
        self._wake.set()

    def cancel(self, request_id: str) -> None:
        try:
            self.catalog.cancel(request_id)
        except Exception as e:
            self.error.value = _error_html(error_text(e))
            return
        self.refresh()
        self.poke()

    def start(self) -> None:
        """Refresh in the background, while displayed, until :meth:`stop`."""
        if self._thread and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sg-staging-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _views_changed(self, change) -> None:
        if (change["new"] or 0) > (change["old"] or 0):
            self.poke()

    def _run(self) -> None:
        while not self._stop.is_set():
            wait = self.schedule.next_wait(self._view_count)
            self._wake.wait(wait)  # None: until a view appears, a poke or stop
            self._wake.clear()
            if self._stop.is_set():
                return
            if self.schedule.next_wait(self._view_count) is not None:
                self.refresh()

    def close(self):
        self.stop()
        super().close()


class _RequestRow:
    def __init__(self, monitor: StagingMonitor, request_id: str):
        self.title = w.HTML()
        self.bar = w.IntProgress(min=0, max=1, layout=w.Layout(width="40%"))
        self.cancel = w.Button(description="Cancel", icon="times", layout=w.Layout(width="auto"))
        self.cancel.on_click(lambda _: monitor.cancel(request_id))
        self.failed = w.HTML()
        self.paths = w.Textarea(layout=w.Layout(width="95%", display="none"))
        self.paths.add_class("sg-paths")
        self.box = w.VBox([w.HBox([self.title, self.bar, self.cancel]), self.failed, self.paths])
        self.box.add_class("sg-request")

    def update(self, view) -> None:
        self.title.value = f"<b>{html.escape(view.did)}</b>: <span class='sg-state'>{html.escape(view.words)}</span>"
        self.bar.max, self.bar.value, self.bar.bar_style = view.total, view.done, view.bar_style
        self.cancel.disabled = not view.can_cancel
        self.failed.value = (
            "<ul style='color:#b00020;margin:0'>" + "".join(f"<li>{html.escape(f)}</li>" for f in view.failed) + "</ul>"
            if view.failed
            else ""
        )
        self.paths.value = "\n".join(view.paths)
        self.paths.layout.display = "" if view.paths else "none"
        self.paths.rows = min(max(len(view.paths), 1), 8)


class DatasetBrowser(w.VBox):
    """Search box and metadata filters, a results table with a Stage button per result.

    Only one batch of results (``batch_size``) is rendered at a time, in a fixed pool of rows, so
    the browser stays responsive with thousands of results.
    """

    def __init__(self, catalog=None, monitor: StagingMonitor | bool = True, batch_size: int = 50, **kwargs):
        self.catalog = _catalog(catalog)
        self.state = BrowserState(batch_size=batch_size)
        self.pattern = w.Text(placeholder="name pattern, e.g. run2024*", description="Name")
        self.filters = w.Text(placeholder="project=run2024, datatype=RAW", description="Metadata")
        self.search_button = w.Button(description="Search", icon="search", button_style="primary")
        self.search_button.on_click(lambda _: self.search())
        self.pattern.continuous_update = self.filters.continuous_update = False
        self.error = w.HTML()
        self.status = w.HTML()
        self.back_button = w.Button(description="Previous", icon="arrow-left")
        self.forward_button = w.Button(description="Next", icon="arrow-right")
        self.back_button.on_click(lambda _: self._move(back=True))
        self.forward_button.on_click(lambda _: self._move(back=False))
        header = w.HTML(self._row_html("Dataset", "Size", "Files", "Metadata", "Availability", header=True))
        self._rows = [_ResultRow(self, i) for i in range(batch_size)]
        self.table = w.VBox([header] + [r.box for r in self._rows])
        self.table.add_class("sg-results")
        if monitor is True:
            monitor = StagingMonitor(self.catalog)
        self.monitor = monitor or None
        children = [
            w.HBox([self.pattern, self.filters, self.search_button]),
            self.error,
            self.status,
            self.table,
            w.HBox([self.back_button, self.forward_button]),
        ]
        if self.monitor is not None:
            children += [w.HTML("<b>Stage-in requests</b>"), self.monitor]
        super().__init__(children=children, **kwargs)
        self.add_class("sg-dataset-browser")
        self._render()

    @staticmethod
    def _row_html(name, size, files, metadata, availability, header=False):
        tag = "b" if header else "span"
        cells = [(name, "32%"), (size, "9%"), (files, "6%"), (metadata, "38%"), (availability, "15%")]
        return "<div style='display:flex;width:100%'>" + "".join(
            f"<{tag} style='width:{width};overflow:hidden;text-overflow:ellipsis'>{html.escape(str(v))}</{tag}>"
            for v, width in cells
        ) + "</div>"

    def search(self, pattern: str | None = None, filters: str | None = None) -> None:
        if pattern is not None:
            self.pattern.value = pattern
        if filters is not None:
            self.filters.value = filters
        self.state.run_search(self.catalog, self.pattern.value, self.filters.value)
        self._render()
        if self.state.complete(self.catalog):  # the metadata the first answer did not wait for
            self._render()

    def stage(self, did: str):
        """Stage one dataset (what its Stage button does); the monitor shows its progress."""
        try:
            request = self.catalog.stage(did)
        except Exception as e:
            self.error.value = _error_html(error_text(e))
            return None
        self.error.value = ""
        if self.monitor is not None:
            self.monitor.refresh()
            self.monitor.poke()
        return request

    def _move(self, back: bool) -> None:
        self.state.back() if back else self.state.forward(self.catalog)
        self._render()
        if self.state.complete(self.catalog):
            self._render()

    def _render(self) -> None:
        self.error.value = _error_html(self.state.error)
        self.status.value = html.escape(self.state.status())
        visible = self.state.visible()
        for i, row in enumerate(self._rows):
            row.show(visible[i] if i < len(visible) else None)
        self.table.layout.display = "" if visible else "none"
        self.back_button.disabled = not self.state.can_back
        self.forward_button.disabled = not self.state.can_forward


class _ResultRow:
    def __init__(self, browser: DatasetBrowser, index: int):
        self.browser = browser
        self.dataset = None
        self.cells = w.HTML(layout=w.Layout(width="88%"))
        self.button = w.Button(description="Stage", icon="download", layout=w.Layout(width="auto"))
        self.button.on_click(lambda _: self.dataset and browser.stage(self.dataset.did))
        self.box = w.HBox([self.cells, self.button])

    def show(self, dataset) -> None:
        self.dataset = dataset
        if dataset is None:
            self.box.layout.display = "none"
            return
        self.box.layout.display = ""
        self.cells.value = DatasetBrowser._row_html(
            dataset.did,
            human_bytes(dataset.bytes),
            "?" if dataset.files is None else dataset.files,
            _metadata_text(dataset.metadata),
            availability_text(dataset),
        )
        self.button.tooltip = f"Stage {dataset.did}"


class ClusterLauncher(w.VBox):
    """Start a Dask cluster from a preset, scale or adapt it within the limits, watch its workers.

    ``launcher.cluster`` is the cluster (``launcher.cluster.get_client()`` for a client); the
    dashboard link opens through the hub. The presets and limits are the user's own (see
    :func:`science_gateway.dask.presets`); a request beyond them shows why, with what is allowed.
    """

    #: what the Workers field offers first (within the limit)
    default_workers = 2

    def __init__(self, preset: str | None = None, environ=None, interval: float = 1.0, **kwargs):
        from .. import dask as api  # the dask extra: imported when a launcher is made

        self._api = api
        self._environ = environ
        self.interval = interval
        self.cluster = None
        self._adaptive: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error = w.HTML()
        try:
            self.described = api.presets(environ)
        except Exception as e:
            self.described = {"presets": {}}
            self.error.value = _error_html(f"The gateway's Dask presets are unreadable: {error_text(e)}")
        options = preset_options(self.described)
        self.preset = w.Dropdown(options=options, description="Preset", layout=w.Layout(width="60%"))
        if preset is not None and preset in dict((n, n) for _, n in options):
            self.preset.value = preset
        self.start_button = w.Button(description="Start cluster", icon="play", button_style="primary")
        self.start_button.on_click(lambda _: self.start())
        self.workers = w.BoundedIntText(value=0, min=0, max=1, description="Workers", layout=w.Layout(width="12em"))
        self.scale_button = w.Button(description="Scale", icon="arrows-v")
        self.scale_button.on_click(lambda _: self.scale(self.workers.value))
        self.adapt_min = w.BoundedIntText(value=0, min=0, max=1, description="Adapt from", layout=w.Layout(width="12em"))
        self.adapt_max = w.BoundedIntText(value=1, min=0, max=1, description="to", layout=w.Layout(width="10em"))
        self.adapt_button = w.Button(description="Adapt", icon="refresh")
        self.adapt_button.on_click(lambda _: self.adapt(self.adapt_min.value, self.adapt_max.value))
        self.close_button = w.Button(description="Close cluster", icon="stop")
        self.close_button.on_click(lambda _: self.close_cluster())
        self.limit = w.HTML()
        self.count = w.HTML()
        self.count.add_class("sg-worker-count")
        self.dashboard = w.HTML()
        self.dashboard.add_class("sg-dashboard")
        self.preset.observe(lambda _: self._show_limits(), names="value")
        super().__init__(
            children=[
                w.HBox([self.preset, self.start_button, self.close_button]),
                self.limit,
                w.HBox([self.workers, self.scale_button]),
                w.HBox([self.adapt_min, self.adapt_max, self.adapt_button]),
                self.count,
                self.dashboard,
                self.error,
            ],
            **kwargs,
        )
        self.add_class("sg-cluster-launcher")
        if not options:
            self.error.value = self.error.value or _error_html(no_presets_text(self.described))
        self._show_limits()
        self._render()

    # -- what a notebook uses ---------------------------------------------------------------------

    def start(self):
        """Start a cluster of the selected preset (no workers yet); closes the previous one."""
        if self.preset.value is None:
            return None
        self.close_cluster()
        try:
            self.cluster = self._api.cluster(self.preset.value, environ=self._environ)
        except Exception as e:
            return self._fail(e)
        self.error.value = ""
        self._adaptive = None
        self._start_watching()
        self._render()
        return self.cluster

    def scale(self, n: int):
        """Ask for ``n`` workers (adaptive scaling stops); beyond the limits: the reason, shown."""
        if self.cluster is None and self.start() is None:
            return
        try:
            self.cluster.scale(n)
        except Exception as e:
            return self._fail(e)
        self.error.value, self._adaptive = "", None
        self._render()

    def adapt(self, minimum: int, maximum: int):
        """Let Dask scale between ``minimum`` and ``maximum`` workers with the load."""
        if self.cluster is None and self.start() is None:
            return
        try:
            self.cluster.adapt(minimum=minimum, maximum=maximum)
        except Exception as e:
            return self._fail(e)
        self.error.value, self._adaptive = "", (minimum, maximum)
        self._render()

    def get_client(self):
        if self.cluster is None:
            raise RuntimeError("no cluster yet: press Start cluster (or call launcher.start())")
        return self.cluster.get_client()

    def close_cluster(self) -> None:
        """Close the cluster: its workers (batch jobs) are cancelled."""
        self._stop.set()
        cluster, self.cluster, self._adaptive = self.cluster, None, None
        if cluster is not None:
            try:
                cluster.close()
            except Exception as e:
                self._fail(e)
        self._render()

    def close(self):
        self.close_cluster()
        super().close()

    # -- rendering --------------------------------------------------------------------------------

    def _fail(self, error: Exception) -> None:
        self.error.value = _error_html(error_text(error))
        return None

    def _show_limits(self) -> None:
        if self.preset.value is None:
            self.limit.value = ""
            return
        limit = preset_limit(self.described, self.preset.value)
        for field_ in (self.workers, self.adapt_min, self.adapt_max):
            field_.max = max(limit, 1)
        self.workers.value = min(self.default_workers, limit)
        self.adapt_max.value = limit
        self.limit.value = html.escape(f"Up to {limit} worker{'s' if limit != 1 else ''} for you with this preset.")

    def _render(self) -> None:
        has_presets = self.preset.value is not None
        running = self.cluster is not None
        self.start_button.disabled = not has_presets
        self.close_button.disabled = not running
        self.scale_button.disabled = self.adapt_button.disabled = not has_presets
        if not running:
            self.count.value = "No cluster running." if has_presets else ""
            self.dashboard.value = ""
            return
        try:
            connected = len(self.cluster.scheduler_info.get("workers", {}))
            requested = len(self.cluster.worker_spec) * self.cluster._workers_per_job()
            link = self.cluster.dashboard_link
        except Exception:  # the cluster is closing under us
            return
        self.count.value = html.escape(workers_text(connected, requested, self._adaptive))
        self.dashboard.value = (
            f'<a href="{html.escape(link)}" target="_blank" rel="noopener">Dask dashboard</a>' if link else ""
        )

    def _start_watching(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(self._stop,), name="sg-cluster-launcher", daemon=True)
        self._thread.start()

    def _watch(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            self._render()


def _split(text: str) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


class PublishPanel(w.VBox):
    """Publish output files as a dataset in your own scope, then export the run as an RO-Crate.

    The fields hold what :meth:`science_gateway.catalog.Catalog.publish` takes (files and input
    datasets comma-separated, metadata as ``key=value, key=value``); ``inputs``, ``notebook``,
    ``parameters`` and ``jobs`` given here (e.g. from a batch run's record) fill them in.
    """

    def __init__(self, catalog=None, files=None, name: str = "", metadata: str = "", inputs=None,
                 notebook: str = "", executed_notebook: str = "", parameters: dict | None = None, jobs=None, **kwargs):
        self.catalog = _catalog(catalog)
        self.parameters = dict(parameters or {})
        self.jobs = [str(j) for j in (jobs or [])]
        self.name = w.Text(value=name, placeholder="crab.flux.v1", description="Dataset")
        self.files = w.Text(value=", ".join(files or []), placeholder="out/flux.csv, out/plot.png", description="Files")
        self.metadata = w.Text(value=metadata, placeholder="analysis=crab-flux, version=1", description="Metadata")
        self.inputs = w.Text(value=", ".join(getattr(d, "did", d) for d in (inputs or [])),
                             placeholder="astro:run2024.raw.0001", description="Inputs")
        self.notebook = w.Text(value=notebook, placeholder="analysis.ipynb", description="Notebook")
        self.executed_notebook = w.Text(value=executed_notebook, placeholder="(optional)", description="Executed")
        self.crate_dest = w.Text(placeholder="crates/crab-flux", description="RO-Crate")
        self.publish_button = w.Button(description="Publish", icon="upload", button_style="primary")
        self.crate_button = w.Button(description="Export RO-Crate", icon="archive", disabled=True)
        self.publish_button.on_click(lambda _: self.publish())
        self.crate_button.on_click(lambda _: self.export_crate())
        self.error = w.HTML()
        self.result = w.HTML()
        #: what the last publish made (None before)
        self.published = None
        super().__init__(children=[
            self.name, self.files, self.metadata, self.inputs, self.notebook, self.executed_notebook,
            self.publish_button, w.HBox([self.crate_dest, self.crate_button]), self.error, self.result,
        ], **kwargs)
        self.add_class("sg-publish-panel")

    def publish(self):
        """Publish what the fields say (what the Publish button does); the result or the error shows."""
        try:
            self.published = self.catalog.publish(
                self.name.value.strip(), _split(self.files.value), metadata=self.metadata.value,
                inputs=_split(self.inputs.value), notebook=self.notebook.value.strip() or None,
                executed_notebook=self.executed_notebook.value.strip() or None,
                parameters=self.parameters, jobs=self.jobs,
            )
        except Exception as e:
            self.error.value = _error_html(error_text(e))
            return None
        self.error.value = ""
        p = self.published
        self.result.value = (
            f"<div class='sg-published'>Published <b>{html.escape(p.did)}</b> on {html.escape(p.rse)}: "
            f"{len(p.files)} files, {human_bytes(sum(f.bytes or 0 for f in p.files))}; "
            f"search it with <code>{html.escape(_metadata_text(p.metadata) or 'sg_published_by=' + p.provenance.user.get('name', ''))}</code></div>"
        )
        self.crate_button.disabled = False
        return self.published

    def export_crate(self):
        """Export the last publish as an RO-Crate into the folder the field names."""
        try:
            answer = self.catalog.export_crate(self.crate_dest.value.strip(), published=self.published)
        except Exception as e:
            self.error.value = _error_html(error_text(e))
            return None
        self.error.value = ""
        self.result.value += f"<div class='sg-crate'>RO-Crate written to <code>{html.escape(answer['path'])}</code></div>"
        return answer
