"""``GET /gateway/api/dask/presets`` in a real Jupyter Server: what the hub handed the server."""

import json

import pytest
from tornado.httpclient import HTTPClientError

from science_gateway.core.presets import ENV_VAR, DaskPresets


async def test_presets_from_the_hub_environment(jp_fetch, monkeypatch):
    presets = DaskPresets(presets={"small": {"partition": "cpu", "max_workers": 8}, "other": {"groups": ["x"]}})
    view = presets.user_view(backend="slurm", groups=["astro"], max_dask_workers=3, partitions={"cpu"},
                             account="astro-2024", comment="science-gateway=sg user=demo")
    monkeypatch.setenv(ENV_VAR, json.dumps(view))
    body = json.loads((await jp_fetch("gateway", "api", "dask", "presets")).body)
    assert body["backend"] == "slurm" and body["account"] == "astro-2024" and body["max_workers"] == 3
    assert list(body["presets"]) == ["small"]
    assert body["presets"]["small"]["max_workers"] == 3
    assert "comment" not in body


async def test_without_hub_environment_the_embedded_presets(jp_fetch, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    body = json.loads((await jp_fetch("gateway", "api", "dask", "presets")).body)
    assert body["backend"] == "local" and set(body["presets"]) == {"small", "medium"}


async def test_unreadable_presets_are_one_json_error(jp_fetch, monkeypatch):
    monkeypatch.setenv(ENV_VAR, json.dumps({"presets": {"bad": {"cores": 0}}}))
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("gateway", "api", "dask", "presets")
    assert e.value.code == 500
    assert "Dask presets are unreadable" in json.loads(e.value.response.body)["message"]


async def test_presets_need_authentication(jp_fetch):
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("gateway", "api", "dask", "presets", headers={"Authorization": ""})
    assert e.value.code == 403
