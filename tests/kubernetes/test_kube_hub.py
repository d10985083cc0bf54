"""Real JupyterHub + the real Kubernetes control plane: servers as pods, the policy checked before
the API server, the shared watch re-adopting and noticing pods, the scheduler's word on the spawn.

Needs scripts/services/kubernetes (started) and configurable-http-proxy on PATH. The pods run on
the control plane's node agent, which runs the test image as processes of the test venv.
"""

import json
import os
import time
from pathlib import Path

import pytest
from kube_e2e import login, make_kube_hub, wait_pods_gone
from sgtest.hostile import HOSTILE, KUBESPAWNER_OPTIONS
from sgtest.hub import free_port, wait_for

pytestmark = [pytest.mark.kubernetes, pytest.mark.hub]


def the_pod(kube, namespace, name) -> dict:
    pods = kube.user_pods(namespace, name)
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


def test_a_server_runs_as_a_pod_within_the_policy_and_the_gateway_api_answers(kube, namespace, kube_hub):
    demo = login(kube_hub, "demo")
    demo.start_server("demo", timeout=150, options={"partition": "cpu", "cores": 2, "memory_gb": 2, "account": "astro-dev"})
    try:
        assert demo.identity("demo") == "demo"
        root = demo.get("/user/demo/gateway/api/")
        assert root.status_code == 200, root.text[:300]
        assert root.json()["name"] == "science-gateway"
        found = demo.get("/user/demo/gateway/api/datasets", params={"filters": "project=run2024,datatype=RAW"})
        assert found.status_code == 200 and found.json()["datasets"], found.text[:300]

        pod = the_pod(kube, namespace, "demo")
        spec, container = pod["spec"], pod["spec"]["containers"][0]
        assert pod["status"]["phase"] == "Running"
        assert spec["nodeName"] == "sg-node-cpu" and spec["nodeSelector"] == {"science-gateway.io/pool": "cpu"}
        assert container["resources"]["limits"] == {"cpu": "2", "memory": str(2 * 1024**3)}
        assert container["resources"]["requests"] == {"cpu": "500m", "memory": str(2 * 1024**3 // 4)}
        assert spec["activeDeadlineSeconds"] == 3600
        assert container["securityContext"]["runAsUser"] == 1000 and spec["securityContext"]["fsGroup"] == 100
        assert pod["metadata"]["labels"]["science-gateway.io/account"] == "astro-dev"
        assert pod["metadata"]["annotations"]["science-gateway.io/identity"] == "demo"
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["JUPYTERHUB_API_URL"] == f"http://127.0.0.1:{kube_hub_port(kube_hub)}/hub/api"
        # per-user storage: a PVC of the configured class, bound, mounted as HOME
        claims = {c["metadata"]["name"]: c for c in kube.pvcs(namespace)}
        volume = next(v for v in spec["volumes"] if v["name"] == "home")
        claim = claims[volume["persistentVolumeClaim"]["claimName"]]
        assert claim["spec"]["storageClassName"] == "sg-local" and claim["status"]["phase"] == "Bound"
        assert {"name": "home", "mountPath": "/home/jovyan"} in [
            {k: m[k] for k in ("name", "mountPath")} for m in container["volumeMounts"]
        ]
    finally:
        demo.stop_server("demo")
    wait_pods_gone(kube, namespace, "demo")
    # the claim outlives the server (per-user storage), and the form remembers the last choice
    assert volume["persistentVolumeClaim"]["claimName"] in {c["metadata"]["name"] for c in kube.pvcs(namespace)}
    form = demo.get("/hub/spawn").text
    assert '<option value="astro-dev" selected>astro-dev</option>' in form


def kube_hub_port(hub) -> int:
    return hub.extra_config["JupyterHub"]["hub_port"]


def test_a_gpu_request_lands_on_the_gpu_pool(kube, namespace, kube_hub):
    astro1 = login(kube_hub, "astro1")
    astro1.start_server("astro1", timeout=150, options={"partition": "gpu", "gpus": 1, "memory_gb": 1})
    try:
        pod = the_pod(kube, namespace, "astro1")
        assert pod["spec"]["nodeName"] == "sg-node-gpu"
        assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert astro1.identity("astro1") == "astro1"
    finally:
        astro1.stop_server("astro1")


def test_polls_read_the_shared_watch_no_request_is_about_one_pod(kube, namespace, kube_hub):
    """With servers running, the hub polls each every 2 s: from KubeSpawner's reflectors (one
    list+watch of pods and one of events for the namespace), never with a request per server."""
    sessions = {name: login(kube_hub, name) for name in ("demo", "astro1")}
    for name, session in sessions.items():
        session.start_server(name, timeout=150, options={"memory_gb": 1})
    try:
        since = time.time()
        time.sleep(15)  # several hub polls of both servers, and at least one reflector cycle
        steady = [e for e in kube.audit_events(kube.env.get("KUBE_HUB_USER", "sg-hub"), since)
                  if (e.get("objectRef") or {}).get("namespace") == namespace]
        assert steady, "the hub's reflectors made no request at all (is the audit log written?)"
        about_one = [(e["verb"], e["objectRef"]) for e in steady if e["objectRef"].get("name")]
        assert about_one == [], about_one
        assert {(e["verb"], e["objectRef"]["resource"]) for e in steady} <= {
            ("list", "pods"), ("watch", "pods"), ("list", "events"), ("watch", "events"),
        }
    finally:
        for name, session in sessions.items():
            session.stop_server(name)


@pytest.mark.parametrize("options", HOSTILE + KUBESPAWNER_OPTIONS)
def test_hostile_and_out_of_policy_options_never_create_a_pod(kube, namespace, kube_hub, options):
    session = login(kube_hub, "demo")
    session.ensure_stopped("demo")
    wait_pods_gone(kube, namespace, "demo")
    claims_before = {c["metadata"]["name"] for c in kube.pvcs(namespace)}
    r = session.api("/users/demo/server", method="POST", json=options)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    message = r.json()["message"]
    assert any(hint in message for hint in ("allowed", "whole number", "must be")), message
    assert not session.server("demo")
    # on the API server: no pod of demo's, no new claim
    assert kube.user_pods(namespace, "demo") == []
    assert {c["metadata"]["name"] for c in kube.pvcs(namespace)} == claims_before


def progress_messages(session, name, until, timeout=90) -> list[str]:
    """Messages of the spawn progress stream until one contains ``until`` (or it ends)."""
    r = session.http.get(f"{session.hub.url}/hub/api/users/{name}/server/progress", stream=True, timeout=timeout)
    messages = []
    deadline = time.monotonic() + timeout
    for line in r.iter_lines(decode_unicode=True):
        if line and line.startswith("data:"):
            event = json.loads(line[5:])
            messages.append(event.get("message", ""))
            if until in messages[-1] or event.get("failed") or event.get("ready") or time.monotonic() > deadline:
                break
    r.close()
    return messages


def test_a_pending_pod_shows_the_schedulers_reason(kube, namespace, kube_hub):
    session = login(kube_hub, "astro2")
    session.ensure_stopped("astro2")
    # 64 cores (16 requested at the test ratio of 1/4): more than any node has
    r = session.api("/users/astro2/server", method="POST", json={"partition": "huge", "cores": 64, "memory_gb": 1})
    assert r.status_code == 202, r.text
    try:
        wait_for(lambda: [p["status"]["phase"] for p in kube.user_pods(namespace, "astro2")] == ["Pending"], 60,
                 what="astro2's pod to pend")
        messages = progress_messages(session, "astro2", until="Insufficient cpu")
        assert "Insufficient cpu" in messages[-1], messages
        assert "nodes are available" in messages[-1], messages
        # what the spawn page shows (its progress bar reads the same stream)
        assert session.server("astro2").get("pending") == "spawn"
    finally:
        session.stop_server("astro2")
    wait_pods_gone(kube, namespace, "astro2")


def test_a_pod_deleted_behind_the_hubs_back_is_noticed_and_the_user_starts_again(kube, namespace, kube_hub):
    session = login(kube_hub, "astro3")
    session.ensure_stopped("astro3")
    session.start_server("astro3", timeout=150, options={"memory_gb": 1})
    pod = the_pod(kube, namespace, "astro3")
    kube.delete_pod(namespace, pod["metadata"]["name"], grace=0)
    # the hub polls every 2 s from the shared pod reflector: the server is gone from its model
    wait_for(lambda: not session.server("astro3"), 60, interval=0.5, what="the hub to notice the deleted pod")
    assert session.server_status("astro3") is None
    session.start_server("astro3", timeout=150, options={"memory_gb": 1})
    try:
        assert session.identity("astro3") == "astro3"
        assert the_pod(kube, namespace, "astro3")["metadata"]["uid"] != pod["metadata"]["uid"]
    finally:
        session.stop_server("astro3")


def test_hub_restart_readopts_running_pods_and_cleans_up_one_that_died(kube, tmp_path_factory):
    with kube.namespace() as namespace:
        check_restart(kube, namespace, tmp_path_factory.mktemp("kuberestart"))


def check_restart(kube, namespace, state):
    hub_port, public_port = free_port(), free_port()

    def hub():
        return make_kube_hub(state, kube, namespace, hub_port=hub_port, port=public_port)

    names = ["demo", "astro1", "astro2"]
    with hub() as first:
        for name in names:
            r = login(first, name).api(f"/users/{name}/server", method="POST", json={"memory_gb": 1})
            assert r.status_code in (201, 202), r.text
        for name in names:
            session = login(first, name)
            wait_for(lambda: session.server_status(name) is not None, 150, interval=0.5, what=f"{name}'s server")
    # the hub is down; its pods are not (cleanup_servers=False); one dies meanwhile
    uids = {name: the_pod(kube, namespace, name)["metadata"]["uid"] for name in names}
    kube.delete_pod(namespace, the_pod(kube, namespace, "astro2")["metadata"]["name"], grace=0)
    wait_pods_gone(kube, namespace, "astro2")

    with hub() as second:
        sessions = {name: login(second, name) for name in names}
        for name in ["demo", "astro1"]:
            wait_for(lambda: sessions[name].server_status(name) is not None, 60, interval=0.5,
                     what=f"{name}'s re-adopted server")
            assert sessions[name].identity(name) == name
            # the same pod, re-adopted, not a new one
            assert the_pod(kube, namespace, name)["metadata"]["uid"] == uids[name]
        wait_for(lambda: not sessions["astro2"].server("astro2"), 60, what="the dead server to be cleared")
        sessions["astro2"].start_server("astro2", timeout=150, options={"memory_gb": 1})
        assert sessions["astro2"].identity("astro2") == "astro2"
        for name in names:
            sessions[name].stop_server(name)
    for name in names:
        wait_pods_gone(kube, namespace, name)


def test_a_root_image_uid_is_refused_before_any_pod(kube, tmp_path_factory):
    """An admin who sets the pods' uid to 0 gets a 403 at the first spawn, and nothing reaches
    the API server: no pod, no claim."""
    with kube.namespace() as namespace:
        with make_kube_hub(tmp_path_factory.mktemp("kuberoot"), kube, namespace, image_uid=0) as hub:
            session = login(hub, "demo")
            r = session.api("/users/demo/server", method="POST", json={})
            assert r.status_code == 403, r.text
            assert "system account" in r.json()["message"]
            assert kube.pods(namespace) == [] and kube.pvcs(namespace) == []


def test_the_users_claim_is_home_and_outlives_the_server(kube, namespace, kube_hub):
    """What is in the user's PVC is in the server's home (the notebook root) and is there again
    after a stop and a new start."""
    session = login(kube_hub, "astro1")
    session.ensure_stopped("astro1")
    session.start_server("astro1", timeout=150, options={"memory_gb": 1})
    try:
        claim = next(v for v in the_pod(kube, namespace, "astro1")["spec"]["volumes"] if v["name"] == "home")
        pvc = kube.get("persistentvolumeclaims", claim["persistentVolumeClaim"]["claimName"], namespace)
        volume = kube.get("persistentvolumes", pvc["spec"]["volumeName"])
        host_dir = Path(volume["spec"]["hostPath"]["path"])
        marker = host_dir / "kept.txt"
        marker.write_text("still here")
        os.chown(marker, 1000, 100)
        # the server itself wrote to its home, as uid 1000
        assert any(p.stat().st_uid == 1000 for p in host_dir.iterdir() if p.name != "kept.txt"), list(host_dir.iterdir())
        r = session.get("/user/astro1/api/contents/kept.txt", params={"content": "1"})
        assert r.status_code == 200 and r.json()["content"] == "still here", r.text[:300]
    finally:
        session.stop_server("astro1")
    wait_pods_gone(kube, namespace, "astro1")
    session.start_server("astro1", timeout=150, options={"memory_gb": 1})
    try:
        r = session.get("/user/astro1/api/contents/kept.txt", params={"content": "1"})
        assert r.status_code == 200 and r.json()["content"] == "still here", r.text[:300]
    finally:
        session.stop_server("astro1")
