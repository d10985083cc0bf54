"""The REST API in a real Jupyter Server (pytest_jupyter), authentication required."""

import json

import pytest
from tornado.httpclient import HTTPClientError



async def test_root_describes_the_gateway(jp_fetch):
    r = await jp_fetch("gateway", "api", "")
    body = json.loads(r.body)
    assert body["name"] == "science-gateway"
    assert body["catalog"]["type"] == "DemoCatalog"


async def test_search_with_filters(jp_fetch):
    r = await jp_fetch("gateway", "api", "datasets", params={"filters": "datatype=CALIB"})
    assert [d["did"] for d in json.loads(r.body)["datasets"]] == ["demo:run2024.calib.0001"]


@pytest.mark.parametrize(
    "params, message",
    [({"limit": "100000"}, "limit must be between"), ({"pattern": "$(reboot)"}, "name pattern")],
    ids=["huge-page", "shell-pattern"],
)
async def test_bad_search_is_a_400_with_one_error_shape(jp_fetch, params, message):
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("gateway", "api", "datasets", params=params)
    assert e.value.code == 400
    assert message in json.loads(e.value.response.body)["message"]


async def test_files_of_a_dataset(jp_fetch):
    r = await jp_fetch("gateway", "api", "datasets", "demo:run2024.raw.0001", "files")
    assert len(json.loads(r.body)["files"]) == 3


async def test_files_of_a_dataset_page_by_page(jp_fetch):
    did = "demo:run2024.raw.0001"
    first = json.loads((await jp_fetch("gateway", "api", "datasets", did, "files", params={"limit": "2"})).body)
    rest = json.loads((await jp_fetch("gateway", "api", "datasets", did, "files", params={"page": first["next"]})).body)
    every = json.loads((await jp_fetch("gateway", "api", "datasets", did, "files")).body)
    assert [len(first["files"]), first["next"], len(rest["files"]), rest["next"], every["next"]] == [2, "2", 1, None, None]
    assert first["files"] + rest["files"] == every["files"]


@pytest.mark.parametrize("params, message", [({"limit": "0"}, "limit must be between"), ({"page": "x1"}, "page token")],
                         ids=["no-files", "foreign-token"])
async def test_a_bad_file_page_is_a_400(jp_fetch, params, message):
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("gateway", "api", "datasets", "demo:run2024.raw.0001", "files", params=params)
    assert e.value.code == 400 and message in json.loads(e.value.response.body)["message"]


async def test_unknown_dataset_is_404(jp_fetch):
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("gateway", "api", "datasets", "demo:nope", "files")
    assert e.value.code == 404
    assert "no dataset" in json.loads(e.value.response.body)["message"]


@pytest.mark.parametrize("path", ["", "datasets", "datasets/demo:run2024.raw.0001/files"])
async def test_unauthenticated_requests_are_refused(jp_fetch, path):
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("gateway", "api", path, headers={"Authorization": ""})
    assert e.value.code == 403
