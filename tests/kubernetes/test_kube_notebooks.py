"""The example notebooks run unchanged in a pod: each code cell in a kernel of the user's server on
the Kubernetes spawner (through the hub proxy, as JupyterLab runs it), so the catalogue client,
staging to the pod's storage and the admin's hub API calls are those a user meets on Kubernetes.

01-astronomer-walkthrough is not here: its Dask cluster comes from presets that are Slurm's
(docs/kubernetes.md says Dask on Kubernetes is not built yet).
"""

import json

import pytest
from kube_e2e import login
from sgtest.kernel import RemoteKernel
from sgtest.notebooks import EXAMPLES

pytestmark = [pytest.mark.kubernetes, pytest.mark.hub]

#: notebook -> who runs it
NOTEBOOKS = {"02-pipeline-developer.ipynb": "demo", "03-admin-effective-policy.ipynb": "admin"}


def code_cells(name: str) -> list[str]:
    nb = json.loads((EXAMPLES / name).read_text())
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
async def test_example_runs_in_a_pod(kube, namespace, kube_hub, name):
    user = NOTEBOOKS[name]
    session = login(kube_hub, user)
    session.ensure_stopped(user)
    session.start_server(user, timeout=150, options={"memory_gb": 1})
    try:
        pods = kube.user_pods(namespace, user)
        assert [p["status"]["phase"] for p in pods] == ["Running"]
        kernel = RemoteKernel(session, user)
        kernel.start()
        try:
            where = await kernel.execute("import os; print(os.getuid(), os.environ['HOME'], os.environ['JUPYTERHUB_USER'])")
            assert where.split() == ["1000", "/home/jovyan", user]   # the pod's account, not the hub's
            for code in code_cells(name):
                await kernel.execute(code, timeout=300)   # raises KernelError with the traceback
            if name.startswith("03-admin"):
                text = await kernel.execute("print(me.as_dict())")
                assert "'groups'" in text and "astro" in text, text
            else:
                text = await kernel.execute("print(len(inputs), inputs[0])")
                count, first = text.split()
                assert int(count) > 0 and first.startswith("/home/jovyan/"), text   # on the user's volume
        finally:
            kernel.shutdown()
    finally:
        session.stop_server(user)
