"""Widget models and views without a browser: state changes, batching, error display.

The fake stands at the Python API boundary (``science_gateway.catalog.Catalog``'s methods); the
real API, server and backends are exercised by the REST, hub and browser tests.
"""

from dataclasses import replace

import pytest

pytest.importorskip("ipywidgets")

from science_gateway.catalog import CatalogAPIError  # noqa: E402
from science_gateway.core.catalog import (  # noqa: E402
    Dataset,
    FailedFile,
    SearchPage,
    StageRequest,
)
from science_gateway.widgets.state import BrowserState, PollSchedule, request_view, requests_snapshot  # noqa: E402
from science_gateway.widgets import DatasetBrowser, StagingMonitor  # noqa: E402


class FakeCatalog:
    """Answers like the Python API would, from an in-memory list; records calls."""

    def __init__(self, n=1000):
        self.datasets = [
            Dataset(scope="demo", name=f"ds.{i:04d}", bytes=1500 * i, files=i % 7, metadata={"project": "run2024"},
                    availability="tape" if i % 2 else "disk")
            for i in range(n)
        ]
        self.calls = []
        self.requests_by_id = {}
        self.fail_next = None

    def _maybe_fail(self):
        if self.fail_next:
            error, self.fail_next = self.fail_next, None
            raise error

    def search(self, pattern="*", filters=None, limit=50, page=None, partial=False):
        self.calls.append(("search", pattern, filters, limit, page))
        self._maybe_fail()
        start = int(page or 0)
        end = start + limit
        return SearchPage(self.datasets[start:end], next=str(end) if end < len(self.datasets) else None)

    def stage(self, did):
        self.calls.append(("stage", did))
        self._maybe_fail()
        request = StageRequest(id=f"r{len(self.requests_by_id)}", did=did, state="in_progress", files_total=4,
                               files_in_flight=4, tape_recall=True)
        self.requests_by_id[request.id] = request
        return request

    def requests(self):
        self.calls.append(("requests",))
        self._maybe_fail()
        return list(self.requests_by_id.values())

    def cancel(self, request_id):
        self.calls.append(("cancel", request_id))
        del self.requests_by_id[request_id]


def test_browser_state_pages_forward_and_back():
    catalog = FakeCatalog(n=120)
    state = BrowserState(batch_size=50)
    state.run_search(catalog, "ds.*", "project=run2024")
    assert [d.name for d in state.visible()][:2] == ["ds.0000", "ds.0001"]
    assert state.status() == "Datasets 1-50 of 50+."
    state.forward(catalog)
    assert state.visible()[0].name == "ds.0050"
    assert catalog.calls[-1] == ("search", "ds.*", "project=run2024", 50, "50")
    state.forward(catalog)
    assert state.status() == "Datasets 101-120 of 120."
    assert not state.can_forward
    state.back()
    assert state.visible()[0].name == "ds.0050"
    searches = [c for c in catalog.calls if c[0] == "search"]
    state.forward(catalog)  # already fetched: no new call
    assert [c for c in catalog.calls if c[0] == "search"] == searches


class PartialCatalog(FakeCatalog):
    """Answers a partial search without the metadata, marked pending, as the Rucio backend does cold."""

    def search(self, pattern="*", filters=None, limit=50, page=None, partial=False):
        found = super().search(pattern, filters, limit, page)
        self.calls[-1] += (partial,)
        if not partial:
            return found
        return SearchPage([replace(d, metadata={}, metadata_pending=True) for d in found.datasets], next=found.next)


def test_browser_state_shows_a_partial_page_then_completes_it():
    catalog = PartialCatalog(n=70)
    state = BrowserState(batch_size=50)
    state.run_search(catalog, "ds.*", "")
    first = state.visible()[0]
    assert first.metadata_pending and first.metadata == {} and first.bytes == 0 and first.availability == "disk"
    assert state.complete(catalog)
    assert state.visible()[0].metadata == {"project": "run2024"} and not state.visible()[0].metadata_pending
    state.forward(catalog)
    assert state.visible()[0].metadata_pending
    assert state.complete(catalog) and state.visible()[0].metadata == {"project": "run2024"}
    assert [c[-2:] for c in catalog.calls] == [(None, True), (None, False), ("50", True), ("50", False)]
    assert not state.complete(catalog)  # nothing pending: no call
    assert len(catalog.calls) == 4


def test_browser_renders_the_metadata_that_follows_a_partial_page():
    catalog = PartialCatalog(n=3)
    browser = DatasetBrowser(catalog, monitor=False)
    browser.search()
    assert "project=run2024" in browser._rows[0].cells.value
    assert [c[-1] for c in catalog.calls] == [True, False]


def test_browser_state_error_keeps_results_and_reads_well():
    catalog = FakeCatalog(n=3)
    state = BrowserState()
    state.run_search(catalog, "", "")
    catalog.fail_next = CatalogAPIError(400, "metadata key '1x' must start with a letter")
    state.run_search(catalog, "", "1x=2")
    assert state.error == "Metadata key '1x' must start with a letter"
    assert len(state.visible()) == 3


@pytest.mark.parametrize(
    "request_, words, style",
    [
        (StageRequest(id="a", did="s:d", state="in_progress", files_total=4, files_done=1, files_in_flight=3,
                      tape_recall=True), "recalling from tape (1 of 4 files)", "info"),
        (StageRequest(id="a", did="s:d", state="in_progress", files_total=4, files_done=2, files_in_flight=2),
         "copying (2 of 4 files)", "info"),
        (StageRequest(id="a", did="s:d", state="ready", files_total=4, files_done=4, paths=["/data/a"]), "ready",
         "success"),
        (StageRequest(id="a", did="s:d", state="failed", files_total=4, files_done=3, files_failed=1,
                      failed=[FailedFile(did="s:f1", reason="source file missing on ARCHIVE")]),
         "stuck: source file missing on ARCHIVE (3 of 4 files)", "danger"),
    ],
    ids=["tape", "copying", "ready", "stuck"],
)
def test_request_state_in_words(request_, words, style):
    view = request_view(request_)
    assert (view.words, view.bar_style) == (words, style)
    assert view.can_cancel == (request_.state == "in_progress")


def test_browser_renders_one_batch_of_a_thousand_results():
    catalog = FakeCatalog(n=1000)
    browser = DatasetBrowser(catalog, monitor=False)
    browser.search("ds.*", "project=run2024")
    shown = [r for r in browser._rows if r.box.layout.display != "none"]
    assert len(shown) == 50 and len(browser._rows) == 50
    assert "ds.0000" in shown[0].cells.value and "on tape" not in shown[0].cells.value
    assert "on tape" in shown[1].cells.value
    for _ in range(19):
        browser.forward_button.click()
    assert "Datasets 951-1000 of 1000." in browser.status.value
    assert len(browser._rows) == 50  # the pool is reused, never grown
    assert browser.forward_button.disabled


def test_stage_button_stages_that_dataset_and_the_monitor_shows_it():
    catalog = FakeCatalog(n=5)
    monitor = StagingMonitor(catalog, autostart=False)
    browser = DatasetBrowser(catalog, monitor=monitor)
    browser.search()
    browser._rows[2].button.click()
    assert ("stage", "demo:ds.0002") in catalog.calls
    assert "recalling from tape (0 of 4 files)" in monitor.children[1].children[0].children[0].value
    catalog.requests_by_id["r0"] = StageRequest(id="r0", did="demo:ds.0002", state="ready", files_total=4,
                                                files_done=4, paths=[f"/data/f{i}" for i in range(4)])
    monitor.refresh()
    assert monitor.paths == {"demo:ds.0002": ["/data/f0", "/data/f1", "/data/f2", "/data/f3"]}
    row = monitor._rows["r0"]
    assert row.paths.value.splitlines() == monitor.paths["demo:ds.0002"]
    assert row.cancel.disabled


def test_errors_show_in_the_widget_not_as_tracebacks():
    catalog = FakeCatalog(n=5)
    browser = DatasetBrowser(catalog, monitor=StagingMonitor(catalog, autostart=False))
    browser.search()
    catalog.fail_next = CatalogAPIError(507, "dataset needs 5 GB but 1 GB of your quota is left")
    browser._rows[0].button.click()
    assert "quota is left" in browser.error.value and "Traceback" not in browser.error.value
    catalog.fail_next = ConnectionRefusedError("[Errno 111] Connection refused")
    browser.monitor.refresh()
    assert "Connection refused" in browser.monitor.error.value


def test_cancel_button_cancels_and_the_row_goes():
    catalog = FakeCatalog(n=2)
    monitor = StagingMonitor(catalog, autostart=False)
    request = catalog.stage("demo:ds.0001")
    monitor.refresh()
    monitor._rows[request.id].cancel.click()
    assert ("cancel", request.id) in catalog.calls
    assert monitor.requests == [] and "No stage-in requests" in monitor.children[1].value


# -- the staging monitor's polling: only while displayed, backing off when nothing changes -----


def _req(done, state="in_progress"):
    return StageRequest(id="a", did="s:d", state=state, files_total=4, files_done=done, files_in_flight=4 - done)


def test_poll_schedule_backs_off_while_nothing_changes_and_resets_on_change():
    schedule = PollSchedule(interval=2, max_interval=30)
    delays = [schedule.polled(requests_snapshot([_req(1)])) for _ in range(6)]
    assert delays == [2, 4, 8, 16, 30, 30]
    assert schedule.polled(requests_snapshot([_req(2)])) == 2  # progress: follow it closely again
    assert schedule.polled(requests_snapshot([_req(2)])) == 4
    schedule.changed()  # a stage or cancel here
    assert schedule.next_wait(1) == 2


def test_poll_schedule_polls_only_while_a_view_is_displayed():
    schedule = PollSchedule(interval=2, max_interval=30)
    assert schedule.next_wait(0) is None  # no view: the tab is gone or the output was cleared
    assert schedule.next_wait(1) == 2
    assert schedule.next_wait(None) == 2  # a front end that does not count views: keep polling


def test_poll_schedule_waits_long_when_nothing_is_in_progress():
    schedule = PollSchedule(interval=2, max_interval=30)
    ready = requests_snapshot([_req(4, state="ready")])
    assert schedule.polled(ready, in_progress=False) == 30
    assert schedule.polled(ready, in_progress=False) == 30


def test_polls_in_18_minutes_of_an_unchanging_request():
    """The finding: 530 refreshes in 18 minutes at a fixed 2 s; now a few dozen at most."""
    schedule = PollSchedule(interval=2, max_interval=30)
    elapsed, polls, snapshot = 0.0, 0, requests_snapshot([_req(1)])
    while elapsed < 18 * 60:
        elapsed += schedule.polled(snapshot)
        polls += 1
    assert polls <= 40


def test_monitor_tracks_its_views_and_does_not_refresh_when_none_is_displayed():
    catalog = FakeCatalog(n=2)
    catalog.stage("demo:ds.0001")
    monitor = StagingMonitor(catalog, autostart=False)
    assert monitor._view_count == 0  # the front end counts views from here on
    assert monitor.schedule.next_wait(monitor._view_count) is None
    monitor._view_count = 1  # what the front end sends when the monitor is displayed
    assert monitor.schedule.next_wait(monitor._view_count) == monitor.interval


def test_monitor_thread_stops_refreshing_when_its_last_view_goes():
    import threading

    catalog = FakeCatalog(n=2)
    catalog.stage("demo:ds.0001")
    refreshed = threading.Event()
    monitor = StagingMonitor(catalog, autostart=False, interval=0.01, max_interval=0.01)
    real_refresh = monitor.refresh

    def refresh():
        refreshed.set()
        return real_refresh()

    monitor.refresh = refresh
    monitor.start()
    try:
        assert not refreshed.wait(0.2)  # not displayed: no refresh at all
        monitor._view_count = 1
        assert refreshed.wait(10)  # displayed: refreshes
        monitor._view_count = 0
        refreshed.wait(0.2)  # a refresh may be under way as the view goes
        refreshed.clear()
        assert not refreshed.wait(0.3)
    finally:
        monitor.stop()
