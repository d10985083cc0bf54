"""What kept the event loop of a user's server busy under heavy calls stays fixed.

Found with asyncio debug mode under ``benchmarks/extension_load.py`` (a search paging through
100,000 datasets, the file list of a 100,000-file dataset and the status of 20 requests, against
a fake Rucio at the HTTP boundary, ``sgtest.rucio_http``). Each test checks the mechanism, not a
duration: long lists are serialised in slices with turns of the loop between them; paging a
search parses each Rucio row about once; the Dask presets answer is built once.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict

import pytest

from science_gateway.core.catalog import DatasetFile
from science_gateway.jupyter_ext import handlers
from science_gateway.jupyter_ext.catalog.rucio import RucioCatalog
from sgtest.rucio_http import BIG, SCOPE, FakeRucio, backend_traits, serve_in_thread
from sgtest.rucio_transfers import private_token_dir


class RecordingHandler:
    """The part of a tornado handler write_json_list uses; records what reached the client."""

    def __init__(self, events: list):
        self.events, self.body, self.headers = events, [], {}

    def set_header(self, name, value):
        self.headers[name] = value

    def set_status(self, status):
        self.status = status

    def write(self, text):
        self.body.append(text)

    def finish(self, text=""):
        self.body.append(text)
        self.events.append("finish")

    async def flush(self):
        self.events.append("flush")

    write_json = handlers.GatewayHandler.write_json
    write_json_list = handlers.GatewayHandler.write_json_list


async def test_a_long_file_list_is_written_in_slices_with_the_loop_free_in_between():
    files = [DatasetFile(scope="s", name=f"f{i:05d}", bytes=i) for i in range(2500)]
    events = []

    def tick():  # another request's callback: it must run between two slices
        events.append("tick")
        if "finish" not in events:
            asyncio.get_running_loop().call_soon(tick)

    handler = RecordingHandler(events)
    asyncio.get_running_loop().call_soon(tick)
    await handler.write_json_list({"did": "s:d"}, "files", files, chunk=1000)

    assert json.loads("".join(handler.body)) == {"did": "s:d", "files": [f.to_dict() for f in files]}
    slices = [i for i, e in enumerate(events) if e == "flush"]
    assert len(slices) == 3
    assert all("tick" in events[a + 1:b] for a, b in zip(slices, slices[1:] + [events.index("finish")]))


async def test_a_short_list_is_one_answer():
    handler = RecordingHandler([])
    await handler.write_json_list({"did": "s:d"}, "files", [DatasetFile("s", "f", 1)], chunk=1000)
    assert handler.events == ["finish"]
    assert json.loads("".join(handler.body)) == {"did": "s:d", "files": [{"did": "s:f", "scope": "s", "name": "f", "bytes": 1}]}


def test_a_files_dict_is_what_asdict_gives():
    f = DatasetFile(scope="s", name="n", bytes=None)
    assert f.to_dict() == {"did": "s:n", **asdict(f)}


def test_the_dask_presets_answer_is_built_once_per_value():
    assert handlers.dask_presets_answer(None) is handlers.dask_presets_answer(None)


@pytest.fixture(scope="module")
def fake_rucio(tmp_path_factory):
    fake = FakeRucio(datasets=2000, big_files=1500, rules=2, rule_files=4)
    url, stop = serve_in_thread(fake)
    with private_token_dir(tmp_path_factory.mktemp("rucio-tokens")):
        yield fake, url
    stop()


@pytest.fixture
async def catalog(fake_rucio, tmp_path):
    fake, url = fake_rucio
    catalog = RucioCatalog(**backend_traits(url, str(tmp_path), fake))
    yield catalog
    await catalog.close()


async def test_paging_a_search_parses_each_row_about_once(fake_rucio, catalog):
    fake, _ = fake_rucio
    before = fake.counts["dids/search"]
    names, page = [], None
    for _ in range(30):
        result = await catalog.search(filters="project=bench", limit="50", page=page, details="false")
        names += [d.name for d in result.datasets]
        page = result.next
    assert names == [fake.dataset_name(i) for i in range(1500)]  # in order, no gap, no repeat
    assert fake.counts["dids/search"] - before <= 6  # 51, 102, 204, 408, 816, 1632 rows: not 30 calls


async def test_a_first_page_always_asks_rucio(fake_rucio, catalog):
    fake, _ = fake_rucio
    before = fake.counts["dids/search"]
    for _ in range(2):
        await catalog.search(filters="project=bench", limit="50", details="false")
    assert fake.counts["dids/search"] - before == 2


async def test_a_file_list_is_fetched_and_built_once(fake_rucio, catalog):
    fake, _ = fake_rucio
    before = fake.counts["dids/files"]
    first = await catalog.list_files(f"{SCOPE}:{BIG}")
    second = await catalog.list_files(f"{SCOPE}:{BIG}")
    assert len(first) == 1500 and first == second and first is not second
    assert fake.counts["dids/files"] - before == 1
