"""``/gateway/api/dask/clusters`` in a real Jupyter Server: clusters the side panel starts, held by
the user's server (``science_gateway.dask.server``), real local Dask clusters from the presets."""

import asyncio
import json

import pytest
from tornado.httpclient import HTTPClientError

from science_gateway.core.presets import ENV_VAR, DaskPresets


@pytest.fixture
def gateway_config():
    return {"ServerApp": {"jpserver_extensions": {"science_gateway.jupyter_ext": True,
                                                  "science_gateway.dask.server": True}},
            "DaskClustersExtension": {"max_clusters": 2}}


@pytest.fixture
def presets_env(monkeypatch):
    """The embedded-default presets, and the dashboard link through the server as the hub sets it."""
    import dask

    from science_gateway.core.presets import DASHBOARD_LINK

    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/demo/")
    monkeypatch.setitem(dask.config.config.setdefault("distributed", {}).setdefault("dashboard", {}), "link",
                        DASHBOARD_LINK)
    presets = DaskPresets(presets={"tiny": {"cores": 1, "memory_gb": 1, "max_workers": 3}})
    view = presets.user_view(backend="local", groups=["astro"], max_dask_workers=3)
    monkeypatch.setenv(ENV_VAR, json.dumps(view))


async def call(jp_fetch, method, *path, body=None):
    kwargs = {"method": method}
    if body is not None:
        kwargs["body"] = json.dumps(body)
    elif method in ("POST", "PATCH"):
        kwargs["body"] = "{}"
    response = await jp_fetch("gateway", "api", "dask", "clusters", *path, **kwargs)
    return response.code, json.loads(response.body) if response.body else None


async def refused(jp_fetch, method, *path, body=None, raw=None):
    kwargs = {"method": method}
    if raw is not None or body is not None:
        kwargs["body"] = raw if raw is not None else json.dumps(body)
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("gateway", "api", "dask", "clusters", *path, **kwargs)
    return e.value.code, json.loads(e.value.response.body)["message"]


async def until_workers(jp_fetch, cluster_id, n, timeout=60):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        _, cluster = await call(jp_fetch, "GET", cluster_id)
        if cluster["workers"] == n:
            return cluster
        assert loop.time() < deadline, f"{cluster['workers']} workers, not {n}, after {timeout} s"
        await asyncio.sleep(0.2)


async def test_start_scale_and_close_a_cluster_from_the_panel(jp_fetch, presets_env):
    assert await call(jp_fetch, "GET") == (200, {"clusters": []})
    code, cluster = await call(jp_fetch, "POST", body={"preset": "tiny", "workers": 2})
    assert code == 201
    assert cluster["preset"] == "tiny" and cluster["requested"] == 2 and cluster["status"] == "running"
    assert cluster["scheduler_address"].startswith("tls://127.0.0.1:")
    assert cluster["dashboard_link"].startswith("/user/demo/proxy/") and cluster["max_workers"] == 3
    cluster_id = cluster["id"]
    assert (await until_workers(jp_fetch, cluster_id, 2))["requested"] == 2
    _, listed = await call(jp_fetch, "GET")
    assert [c["id"] for c in listed["clusters"]] == [cluster_id]

    # beyond the user's limit: refused with the limit, the cluster unchanged
    code, message = await refused(jp_fetch, "PATCH", cluster_id, body={"workers": 4})
    assert code == 403 and "at most 3 workers" in message
    assert (await call(jp_fetch, "GET", cluster_id))[1]["requested"] == 2

    code, scaled = await call(jp_fetch, "PATCH", cluster_id, body={"workers": 1})
    assert code == 200 and scaled["requested"] == 1
    await until_workers(jp_fetch, cluster_id, 1)

    code, _ = await call(jp_fetch, "DELETE", cluster_id)
    assert code == 204
    assert await call(jp_fetch, "GET") == (200, {"clusters": []})
    code, message = await refused(jp_fetch, "GET", cluster_id)
    assert code == 404 and "GET dask/clusters lists yours" in message


async def test_the_limit_counts_every_cluster_and_the_server_holds_few(jp_fetch, presets_env):
    _, first = await call(jp_fetch, "POST", body={"preset": "tiny", "workers": 2})
    code, message = await refused(jp_fetch, "POST", body={"preset": "tiny", "workers": 2})
    assert code == 403 and "other clusters hold 2" in message
    _, second = await call(jp_fetch, "POST", body={"preset": "tiny"})
    assert second["requested"] == 0 and second["max_workers"] == 1
    code, message = await refused(jp_fetch, "POST", body={"preset": "tiny"})
    assert code == 403 and "holds 2 Dask clusters already" in message
    for cluster in (first, second):
        assert (await call(jp_fetch, "DELETE", cluster["id"]))[0] == 204


@pytest.mark.parametrize(
    "body, raw, status, words",
    [
        ({"preset": "huge"}, None, 404, "no Dask preset 'huge' for you; presets you may use: tiny"),
        ({"preset": "tiny", "cores": 64}, None, 400, "unknown key 'cores'"),
        ({"preset": ["tiny"]}, None, 400, "'preset' is <list>, not text"),
        ({"preset": "tiny", "workers": -1}, None, 400, "'workers' is -1, not a whole number"),
        ({"preset": "tiny", "workers": True}, None, 400, "'workers' is True"),
        (None, "[1]", 400, "JSON list, not an object"),
        (None, "{not json", 400, "the body is not JSON"),
        (None, "x" * 5000, 413, "at most 4096 are read"),
    ],
    ids=["unknown-preset", "resource-key", "preset-not-text", "negative", "bool", "list", "not-json", "huge"],
)
async def test_bad_start_requests_are_refused_with_the_reason(jp_fetch, presets_env, body, raw, status, words):
    code, message = await refused(jp_fetch, "POST", body=body, raw=raw)
    assert (code, words in message) == (status, True), message
    assert len(message) < 400
    assert await call(jp_fetch, "GET") == (200, {"clusters": []})


async def test_unknown_and_hostile_ids_get_the_apis_404(jp_fetch, presets_env):
    for cluster_id in ("1-abcdef", "..%2F..%2Fetc", "x" * 300):
        code, message = await refused(jp_fetch, "DELETE", cluster_id)
        assert code == 404 and len(message) < 300
    code, _ = await refused(jp_fetch, "PATCH", "1-abcdef", body={"workers": 1})
    assert code == 404


async def test_no_presets_for_the_user_says_so(jp_fetch, monkeypatch):
    view = DaskPresets(presets={"tiny": {"groups": ["other"]}}).user_view(backend="local", groups=["astro"],
                                                                                    max_dask_workers=3)
    monkeypatch.setenv(ENV_VAR, json.dumps(view))
    code, message = await refused(jp_fetch, "POST", body={"preset": "tiny"})
    assert code == 404 and "you may not start Dask clusters" in message


async def test_clusters_need_authentication(jp_fetch):
    for method in ("GET", "POST"):
        with pytest.raises(HTTPClientError) as e:
            await jp_fetch("gateway", "api", "dask", "clusters", method=method, headers={"Authorization": ""},
                           body="{}" if method == "POST" else None)
        assert e.value.code == 403


async def test_stopping_the_server_closes_its_clusters(jp_serverapp, jp_fetch, presets_env):
    _, cluster = await call(jp_fetch, "POST", body={"preset": "tiny", "workers": 1})
    await until_workers(jp_fetch, cluster["id"], 1)
    (extension,) = jp_serverapp.extension_manager.extension_apps["science_gateway.dask.server"]
    (held,) = extension.manager.clusters.values()
    await extension.stop_extension()
    assert held.status.name == "closed" and extension.manager.clusters == {}
