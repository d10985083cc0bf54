"""The ipywidgets views: a dataset browser and a staging monitor over the Python API.

Each is one line in a cell::

    from science_gateway.widgets import DatasetBrowser, StagingMonitor
    DatasetBrowser()      # search, a Stage button per result, and a staging monitor under it

Errors from the gateway appear in the widget as readable messages, never as tracebacks.
"""

from __future__ import annotations

import html
import threading

import ipywidgets as w

from .state import BrowserState, availability_text, error_text, human_bytes, request_view


def _catalog(catalog):
    if catalog is not None:
        return catalog
    from ... import catalog as api

    return api.default()


def _error_html(message: str) -> str:
    return f'<div class="sg-error" style="color:#b00020">&#9888; {html.escape(message)}</div>' if message else ""


def _metadata_text(metadata: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(metadata.items()))


class StagingMonitor(w.VBox):
    """One progress bar per stage-in request, its state in words, failures, Cancel, and paths."""

    def __init__(self, catalog=None, interval: float = 2.0, autostart: bool = True, **kwargs):
        self.catalog = _catalog(catalog)
        self.interval = interval
        self.error = w.HTML()
        self.empty = w.HTML("<i>No stage-in requests yet.</i>")
        self._rows: dict[str, _RequestRow] = {}
        self._requests: dict = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        super().__init__(children=[self.error, self.empty], **kwargs)
        self.add_class("sg-staging-monitor")
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

    def refresh(self) -> None:
        """One bulk status call for all requests, then update the rows in place."""
        try:
            requests = self.catalog.requests()
        except Exception as e:
            self.error.value = _error_html(error_text(e))
            return
        self.error.value = ""
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

    def cancel(self, request_id: str) -> None:
        try:
            self.catalog.cancel(request_id)
        except Exception as e:
            self.error.value = _error_html(error_text(e))
            return
        self.refresh()

    def start(self) -> None:
        """Refresh in the background every ``interval`` seconds until :meth:`stop`."""
        if self._thread and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sg-staging-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
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
        return request

    def _move(self, back: bool) -> None:
        self.state.back() if back else self.state.forward(self.catalog)
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
