"""The bundled demo catalogue and the query validation every backend shares."""

import pytest
from traitlets.config import Config

from science_gateway.core.catalog import InvalidQuery, parse_filters
from science_gateway.jupyter_ext.catalog.demo import DemoCatalog
from science_gateway.core.catalog import InvalidDID, parse_did


@pytest.fixture
def catalog():
    return DemoCatalog()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", {}),
        ("project=run2024", {"project": "run2024"}),
        ("project=run2024, datatype=RAW", {"project": "run2024", "datatype": "RAW"}),
        (" project = run2024 ,", {"project": "run2024"}),
    ],
    ids=["empty", "one", "two", "spaces-and-trailing-comma"],
)
def test_parse_filters(text, expected):
    assert parse_filters(text) == expected


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"pattern": "run;rm -rf /"}, "name pattern"),
        ({"filters": "project"}, "key=value"),
        ({"filters": {"1bad": "x"}}, "metadata key"),
        ({"filters": {"project": "a b"}}, "holds characters"),
        ({"limit": "ten"}, "whole number"),
        ({"limit": 0}, "between 1 and 500"),
        ({"limit": 10**6}, "between 1 and 500"),
    ],
    ids=["shell-in-pattern", "filter-without-value", "bad-key", "space-in-value", "limit-not-number", "limit-zero", "limit-huge"],
)
def test_bad_queries_are_refused_with_a_message(catalog, kwargs, message):
    with pytest.raises(InvalidQuery, match=message):
        catalog.query(**kwargs)


def test_page_size_limit_is_configurable():
    catalog = DemoCatalog(config=Config({"DemoCatalog": {"max_page_size": 2}}))
    with pytest.raises(InvalidQuery, match="between 1 and 2"):
        catalog.query(limit=3)


async def test_search_filters_and_pages(catalog):
    first = await catalog.search(catalog.query(filters="project=run2024", limit=2))
    assert [d.did for d in first.datasets] == ["demo:run2024.calib.0001", "demo:run2024.raw.0001"]
    assert first.next == "2"
    second = await catalog.search(catalog.query(filters="project=run2024", limit=2, page=first.next))
    assert [d.did for d in second.datasets] == ["demo:run2024.raw.0002"]
    assert second.next is None


async def test_search_reports_size_files_and_availability(catalog):
    page = await catalog.search(catalog.query(pattern="run2024.raw.*"))
    by_did = {d.did: d for d in page.datasets}
    assert by_did["demo:run2024.raw.0002"].availability == "tape"
    assert by_did["demo:run2024.raw.0001"].files == 3
    assert by_did["demo:run2024.raw.0001"].bytes > 0


async def test_foreign_page_token_is_refused(catalog):
    with pytest.raises(InvalidQuery, match="not issued"):
        await catalog.search(catalog.query(page="abc"))


async def test_list_files(catalog):
    files = await catalog.list_files("demo:survey.dr1.catalog")
    assert [f.name for f in files] == ["survey.dr1.catalog.part000.csv"]
    assert await catalog.list_files("demo:no.such.dataset") is None


@pytest.mark.parametrize(
    "did", ["nocolon", "a:b:c", ":name", "scope:", "sc ope:name", "scope:../etc/passwd", "scope:a//b"],
)
def test_malformed_dids_are_refused(did):
    with pytest.raises(InvalidDID):
        parse_did(did)
