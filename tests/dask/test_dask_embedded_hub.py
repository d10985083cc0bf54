"""The embedded default: the same notebook code gets a local cluster, its dashboard through the hub."""

import json

import pytest
from sgtest.kernel import KernelError, RemoteKernel

pytestmark = pytest.mark.hub

CODE = """
import json
from science_gateway import dask as sgd
cluster = sgd.cluster("small")
cluster.scale(2)
client = cluster.get_client()
client.wait_for_workers(2, timeout=120)
print(json.dumps({"sum": client.submit(sum, [1, 2, 3]).result(), "link": cluster.dashboard_link,
                  "kind": type(cluster).__name__}))
"""


async def test_notebook_code_runs_unchanged_on_local_workers(demo_session):
    demo_session.start_server("demo")
    listed = demo_session.get("/user/demo/gateway/api/dask/presets").json()
    assert listed["backend"] == "local" and set(listed["presets"]) == {"small", "medium"}
    kernel = RemoteKernel(demo_session, "demo")
    kernel.start()
    try:
        result = json.loads((await kernel.execute(CODE)).strip().splitlines()[-1])
        assert result == {"sum": 6, "kind": "GatewayLocalCluster", "link": result["link"]}
        assert result["link"].startswith("/user/demo/proxy/") and result["link"].endswith("/status")
        page = demo_session.get(result["link"])
        assert page.status_code == 200 and "Dask" in page.text
        with pytest.raises(KernelError, match="allows at most 8 workers"):
            await kernel.execute("cluster.scale(9)")
        await kernel.execute("client.close(); cluster.close()")
    finally:
        kernel.shutdown()
