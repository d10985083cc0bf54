"""The local Kubernetes control plane (scripts/services/kubernetes) and its test node agent.

Real kube-apiserver, controller-manager and scheduler; the node agent runs each pod bound to
sg-node-cpu or sg-node-gpu as a local process. These tests check what the spawner, chart and
benchmark tests rely on: the nodes, the scheduler's decisions, the pods' users, addresses, exit
codes, deletion, restarts, volumes, the storage class, RBAC and the audit log.
"""

import os
import pwd
import time

import pytest
import requests
from sgtest.kube import KubeCluster, KubeError, container_state, pod_manifest

pytestmark = [pytest.mark.kubernetes]

SHELL_IMAGE = "sg-test/shell"
#: the test machine's unix user the pods run as by default (scripts/services/slurm install creates
#: it; useradd picks its uid): looked up when a test needs it
def demo_user() -> pwd.struct_passwd:
    return pwd.getpwnam("demo")


@pytest.fixture(scope="module")
def kube():
    cluster = KubeCluster()
    cluster.register_image(SHELL_IMAGE, "/usr/bin", env={"SG_IMAGE_MARK": "shell-image"})
    return cluster


@pytest.fixture
def ns(kube):
    with kube.namespace("sgcp") as name:
        yield name


def terminated(pod):
    return "terminated" in container_state(pod)


def run_to_end(kube, ns, body, timeout=60):
    kube.create("pods", body, ns)
    return kube.wait("pods", body["metadata"]["name"], ns, until=terminated, timeout=timeout, what="terminated")


def running(pod):
    return bool(pod) and pod["status"].get("phase") == "Running" and "running" in container_state(pod)


def test_both_nodes_ready_with_pools_taint_and_capacity(kube):
    nodes = {n["metadata"]["name"]: n for n in kube.list("nodes")}
    assert set(kube.nodes) <= set(nodes)
    for name in kube.nodes:
        ready = [c for c in nodes[name]["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True", ready
        lease = kube.get("leases", name, "kube-node-lease")
        assert lease and lease["spec"]["holderIdentity"] == name
    cpu, gpu = nodes["sg-node-cpu"], nodes["sg-node-gpu"]
    assert cpu["metadata"]["labels"]["science-gateway.io/pool"] == "cpu"
    assert gpu["metadata"]["labels"]["science-gateway.io/pool"] == "gpu"
    assert not [t for t in cpu["spec"].get("taints", []) if t["key"] == "nvidia.com/gpu"]
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in [
        {k: t.get(k) for k in ("key", "value", "effect")} for t in gpu["spec"]["taints"]]
    assert cpu["status"]["capacity"]["cpu"] == "4" and cpu["status"]["capacity"]["memory"] == "8Gi"
    assert "nvidia.com/gpu" not in cpu["status"]["capacity"]
    assert gpu["status"]["allocatable"]["nvidia.com/gpu"] == "2"
    default = [sc for sc in kube.list("storageclasses")
               if sc["metadata"].get("annotations", {}).get("storageclass.kubernetes.io/is-default-class") == "true"]
    assert [sc["metadata"]["name"] for sc in default] == [kube.storage_class]


def test_pod_runs_as_its_user_and_reports_the_exit_code(kube, ns):
    body = pod_manifest("whoami", ["sh", "-c", "id -u; id -G; pwd; echo HOME=$HOME; echo $SG_IMAGE_MARK $PATH; exit 3"], uid="demo",
                        workingDir="/tmp")
    body["spec"]["securityContext"]["fsGroup"] = 100
    pod = run_to_end(kube, ns, body)
    state = container_state(pod)["terminated"]
    assert state["exitCode"] == 3 and state["reason"] == "Error"
    assert pod["status"]["phase"] == "Failed"
    uid_line, groups_line, cwd, home, image = kube.pod_log(pod).splitlines()[:5]
    assert uid_line == str(demo_user().pw_uid)
    assert "100" in groups_line.split()
    assert cwd == "/tmp"
    assert home == f"HOME={demo_user().pw_dir}"
    # the images file gave the image's environment and PATH
    assert image == "shell-image /usr/bin:/usr/local/bin:/usr/bin:/bin"
    reasons = [e["reason"] for e in kube.events(ns, "whoami")]
    assert "Scheduled" in reasons and "Started" in reasons


def test_pod_succeeds_with_exit_code_zero(kube, ns):
    pod = run_to_end(kube, ns, pod_manifest("ok", ["true"]))
    assert container_state(pod)["terminated"]["exitCode"] == 0
    assert pod["status"]["phase"] == "Succeeded"


@pytest.mark.parametrize("uid", [None, 0], ids=["no-runAsUser", "root"])
def test_pod_without_a_non_root_user_does_not_run(kube, ns, uid):
    body = pod_manifest("rooty", ["sh", "-c", f"touch {kube.volumes_dir}/must-not-exist"], uid=uid)
    if uid == 0:
        body["spec"]["securityContext"] = {"runAsUser": 0}
    kube.create("pods", body, ns)
    pod = kube.wait("pods", "rooty", ns, until=lambda p: "waiting" in container_state(p)
                    and container_state(p)["waiting"].get("reason") == "CreateContainerConfigError",
                    what="refused")
    assert "runAsUser" in container_state(pod)["waiting"]["message"]
    assert pod["status"]["phase"] == "Pending"
    assert not (kube.volumes_dir / "must-not-exist").exists()


SERVER = """
import os, http.server, urllib.parse
url = urllib.parse.urlsplit(os.environ["JUPYTERHUB_SERVICE_URL"])
ip = [a.split("=", 1)[1] for a in os.sys.argv[1:] if a.startswith("--ip=")][0]
assert ip == url.hostname, (ip, url.hostname)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (os.environ["HOSTNAME"] + " " + os.environ["POD_IP"]).encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
http.server.HTTPServer((ip, url.port), H).serve_forever()
"""


def test_each_pod_listens_on_its_own_loopback_address(kube, ns):
    names = ["srv-a", "srv-b"]
    for name in names:
        kube.create("pods", pod_manifest(
            name, ["python3", "-c", SERVER, "--ip=0.0.0.0"],
            env=[{"name": "JUPYTERHUB_SERVICE_URL", "value": "http://0.0.0.0:8888/user/x/"},
                 {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]), ns)
    ips = {}
    for name in names:
        pod = kube.wait("pods", name, ns, until=running, what="running")
        ip = pod["status"]["podIP"]
        assert ip.startswith("127.") and ip != "127.0.0.1"
        ready = [c for c in pod["status"]["conditions"] if c["type"] == "Ready"]
        assert ready[0]["status"] == "True"
        ips[name] = ip
    assert len(set(ips.values())) == 2
    for name, ip in ips.items():
        deadline = time.monotonic() + 30
        while True:
            try:
                r = requests.get(f"http://{ip}:8888/", timeout=5)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"nothing on {ip}:8888; log: {kube.pod_log(kube.get('pods', name, ns))}")
                time.sleep(0.2)
        assert r.text == f"{name} {ip}"


def test_unschedulable_pod_is_pending_with_the_schedulers_reason(kube, ns):
    body = pod_manifest("greedy", ["true"], resources={"requests": {"cpu": "64"}})
    kube.create("pods", body, ns)
    deadline = time.monotonic() + 60
    while not (events := [e for e in kube.events(ns, "greedy") if e["reason"] == "FailedScheduling"]):
        assert time.monotonic() < deadline, "no FailedScheduling event"
        time.sleep(0.5)
    assert "Insufficient cpu" in events[0]["message"]
    assert "default-scheduler" in (events[0].get("reportingComponent"), events[0]["source"].get("component"))
    pod = kube.get("pods", "greedy", ns)
    assert pod["status"]["phase"] == "Pending" and not pod["spec"].get("nodeName")
    scheduled = [c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled"][0]
    assert scheduled["status"] == "False" and scheduled["reason"] == "Unschedulable"


GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}


def test_gpu_pod_lands_on_the_gpu_node_and_others_never_do(kube, ns):
    kube.create("pods", pod_manifest("gpu", ["sleep", "30"], tolerations=[GPU_TOLERATION],
                                     resources={"limits": {"nvidia.com/gpu": "1"}}), ns)
    plain = [f"plain-{i}" for i in range(4)]
    for name in plain:
        kube.create("pods", pod_manifest(name, ["sleep", "30"]), ns)
    kube.create("pods", pod_manifest("gpu-untolerated", ["sleep", "30"],
                                     resources={"limits": {"nvidia.com/gpu": "1"}}), ns)
    pod = kube.wait("pods", "gpu", ns, until=running, what="running")
    assert pod["spec"]["nodeName"] == "sg-node-gpu"
    for name in plain:
        pod = kube.wait("pods", name, ns, until=lambda p: p and p["spec"].get("nodeName"), what="scheduled")
        assert pod["spec"]["nodeName"] == "sg-node-cpu"
    deadline = time.monotonic() + 60
    while not (events := [e for e in kube.events(ns, "gpu-untolerated") if e["reason"] == "FailedScheduling"]):
        assert time.monotonic() < deadline, "no FailedScheduling event"
        time.sleep(0.5)
    assert "nvidia.com/gpu" in events[0]["message"]
    assert not kube.get("pods", "gpu-untolerated", ns)["spec"].get("nodeName")


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_deleting_a_pod_ends_its_process(kube, ns):
    # the shell ignores nothing: SIGTERM ends it within the grace period
    # "$$$$": Kubernetes turns "$$" into "$" (its $(VAR) expansion), so the shell sees "$$"
    kube.create("pods", pod_manifest("sleeper", ["sh", "-c", "echo $$$$; exec sleep 600"]), ns)
    pod = kube.wait("pods", "sleeper", ns, until=lambda p: running(p) and kube.pod_log(p).strip(), what="running")
    pid = int(kube.pod_log(pod).split()[0])
    assert pid_alive(pid)
    with open(f"/proc/{pid}/status") as f:
        assert f"Uid:\t{demo_user().pw_uid}" in f.read()
    kube.delete("pods", "sleeper", ns)
    kube.wait_gone("pods", "sleeper", ns, timeout=30)
    assert not pid_alive(pid)
    assert "Killing" in [e["reason"] for e in kube.events(ns, "sleeper")]


def test_process_ignoring_sigterm_is_killed_after_the_grace_period(kube, ns):
    body = pod_manifest("stubborn", ["sh", "-c", "trap '' TERM; echo $$$$; while true; do sleep 0.2; done"],
                        terminationGracePeriodSeconds=2)
    kube.create("pods", body, ns)
    pod = kube.wait("pods", "stubborn", ns, until=lambda p: running(p) and kube.pod_log(p).strip(), what="running")
    pid = int(kube.pod_log(pod).split()[0])
    kube.delete("pods", "stubborn", ns)
    kube.wait_gone("pods", "stubborn", ns, timeout=30)
    assert not pid_alive(pid)


def test_restart_policy_on_failure_restarts_until_success(kube, ns):
    script = "if [ -f /work/once ]; then echo second; exit 0; fi; touch /work/once; echo first; exit 1"
    body = pod_manifest("flaky", ["sh", "-c", script], restartPolicy="OnFailure",
                        volumes=[{"name": "work", "emptyDir": {}}],
                        volumeMounts=[{"name": "work", "mountPath": "/work"}])
    kube.create("pods", body, ns)
    pod = kube.wait("pods", "flaky", ns, until=lambda p: p and p["status"].get("phase") == "Succeeded",
                    timeout=60, what="Succeeded")
    status = pod["status"]["containerStatuses"][0]
    assert status["restartCount"] == 1
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert kube.pod_log(pod).split() == ["first", "second"]


def test_restart_policy_never_does_not_restart(kube, ns):
    pod = run_to_end(kube, ns, pod_manifest("once", ["sh", "-c", "exit 2"]))
    time.sleep(2)   # a restart would have happened by now (the back-off starts at 1 s)
    pod = kube.get("pods", "once", ns)
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    assert pod["status"]["phase"] == "Failed"


def test_active_deadline_ends_the_pod(kube, ns):
    kube.create("pods", pod_manifest("deadline", ["sh", "-c", "echo $$$$; exec sleep 600"],
                                     activeDeadlineSeconds=2), ns)
    pod = kube.wait("pods", "deadline", ns, until=lambda p: p and p["status"].get("phase") == "Failed",
                    timeout=60, what="Failed")
    assert pod["status"]["reason"] == "DeadlineExceeded"
    assert not pid_alive(int(kube.pod_log(pod).split()[0]))


def test_env_secret_and_configmap_volumes(kube, ns):
    kube.create("secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                            "stringData": {"password": "s3cret", "token": "tkn"}}, ns)
    kube.create("configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                               "data": {"greeting": "hello", "settings.json": "{}"}}, ns)
    script = ("echo PW=$PW; echo NS=$NS; echo G=$G; echo FROM=$CFG_greeting; echo X=$X; "
              "cat /etc/sgtest-s/password; echo; cat /etc/sgtest-c/greeting; echo; "
              "test -f /etc/sgtest-c/settings.json && echo has-settings; "
              "test -f /var/run/secrets/kubernetes.io/serviceaccount/token && echo has-token")
    body = pod_manifest("envs", ["sh", "-c", script],
                        env=[{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "password"}}},
                             {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                             {"name": "G", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "greeting"}}},
                             {"name": "X", "value": "$(G)-world"}],
                        envFrom=[{"configMapRef": {"name": "c"}, "prefix": "CFG_"}],
                        volumes=[{"name": "s", "secret": {"secretName": "s"}},
                                 {"name": "c", "configMap": {"name": "c"}}],
                        volumeMounts=[{"name": "s", "mountPath": "/etc/sgtest-s", "readOnly": True},
                                      {"name": "c", "mountPath": "/etc/sgtest-c"}])
    pod = run_to_end(kube, ns, body)
    assert container_state(pod)["terminated"]["exitCode"] == 0, kube.pod_log(pod)
    assert kube.pod_log(pod).split() == [
        "PW=s3cret", f"NS={ns}", "G=hello", "FROM=hello", "X=hello-world", "s3cret", "hello",
        "has-settings", "has-token"]
    # the mounts were in the pod's own mount namespace: nothing is mounted there on the host
    with open("/proc/self/mountinfo") as f:
        assert " /etc/sgtest-s " not in f.read()
    # and the mount points the pod needed are gone with it
    kube.delete("pods", "envs", ns)
    kube.wait_gone("pods", "envs", ns)
    assert not os.path.exists("/etc/sgtest-s") and not os.path.exists("/etc/sgtest-c")


def test_sg_local_claim_is_bound_and_the_pod_writes_into_its_volume(kube, ns):
    kube.create("persistentvolumeclaims", {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "home"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}, ns)
    pvc = kube.wait("persistentvolumeclaims", "home", ns, until=lambda c: c["status"].get("phase") == "Bound",
                    what="Bound")
    assert pvc["spec"]["storageClassName"] == kube.storage_class   # the default class
    pv = kube.get("persistentvolumes", pvc["spec"]["volumeName"])
    assert pv["spec"]["claimRef"]["uid"] == pvc["metadata"]["uid"]
    host_dir = pv["spec"]["hostPath"]["path"]
    assert host_dir.startswith(str(kube.volumes_dir))
    body = pod_manifest("writer", ["sh", "-c", "echo written-in-pod > /home/sgtest-claim/note.txt"],
                        volumes=[{"name": "home", "persistentVolumeClaim": {"claimName": "home"}}],
                        volumeMounts=[{"name": "home", "mountPath": "/home/sgtest-claim"}])
    pod = run_to_end(kube, ns, body)
    assert container_state(pod)["terminated"]["exitCode"] == 0, kube.pod_log(pod)
    note = os.path.join(host_dir, "note.txt")
    with open(note) as f:
        assert f.read() == "written-in-pod\n"
    assert os.stat(note).st_uid == demo_user().pw_uid
    assert not os.path.exists("/home/sgtest-claim/note.txt")
    # deleting the claim deletes its volume and the directory (reclaimPolicy Delete)
    kube.delete("pods", "writer", ns)
    kube.wait_gone("pods", "writer", ns)
    kube.delete("persistentvolumeclaims", "home", ns)
    kube.wait_gone("persistentvolumes", pv["metadata"]["name"], timeout=60)
    assert not os.path.exists(host_dir)


def test_a_pod_waits_for_its_claim_then_runs(kube, ns):
    """A pod the node gets before its claim is bound (many spawns at once: KubeSpawner creates the
    claim and the pod in a row) waits in ContainerCreating and runs once the claim is bound, as a
    kubelet retries the mount; it once stayed ContainerCreating for good."""
    body = pod_manifest("early", ["sh", "-c", "echo ok > /home/sgtest-early/note.txt"],
                        nodeName="sg-node-cpu",   # straight to the node, before the claim exists
                        volumes=[{"name": "home", "persistentVolumeClaim": {"claimName": "late"}}],
                        volumeMounts=[{"name": "home", "mountPath": "/home/sgtest-early"}])
    kube.create("pods", body, ns)
    kube.wait("pods", "early", ns, what="ContainerCreating",
              until=lambda p: container_state(p).get("waiting", {}).get("reason") == "ContainerCreating")
    kube.create("persistentvolumeclaims", {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "late"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}, ns)
    pod = kube.wait("pods", "early", ns, until=lambda p: "terminated" in container_state(p), timeout=60,
                    what="the pod to run once its claim is bound")
    assert container_state(pod)["terminated"]["exitCode"] == 0, kube.pod_log(pod)


def test_unknown_image_is_err_image_pull(kube, ns):
    kube.create("pods", pod_manifest("noimage", ["true"], image="example.org/not-registered"), ns)
    pod = kube.wait("pods", "noimage", ns, until=lambda p: container_state(p).get("waiting", {}).get("reason")
                    == "ErrImagePull", what="ErrImagePull")
    assert str(kube.images_file) in container_state(pod)["waiting"]["message"]
    assert pod["status"]["phase"] == "Pending"


def test_hub_user_has_the_hub_role_only(kube, ns):
    hub = kube.as_user(kube.env["KUBECONFIG_HUB"])
    hub.create("pods", pod_manifest("by-hub", ["true"]), ns)
    assert [p["metadata"]["name"] for p in hub.list("pods", ns)] == ["by-hub"]
    with pytest.raises(KubeError) as refused:
        hub.list("nodes")
    assert refused.value.status == 403
    with pytest.raises(KubeError) as refused:
        hub.create("configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}, ns)
    assert refused.value.status == 403


def test_audit_log_records_each_request_by_user(kube, ns):
    since = time.time() - 1
    bench = kube.as_user(kube.env["KUBECONFIG_BENCH_OURS"])
    bench.get("pods", "no-such-pod", ns)
    bench.list("pods", ns)
    deadline = time.monotonic() + 20
    while True:
        events = [e for e in kube.audit_events("sg-bench-ours", since)
                  if e.get("objectRef", {}).get("namespace") == ns]
        if len(events) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    verbs = sorted(e["verb"] for e in events)
    assert verbs == ["get", "list"], events
    get = [e for e in events if e["verb"] == "get"][0]
    assert get["objectRef"]["resource"] == "pods" and get["objectRef"]["name"] == "no-such-pod"
    assert get["responseStatus"]["code"] == 404
    assert get["requestURI"] == f"/api/v1/namespaces/{ns}/pods/no-such-pod"
    assert get["level"] == "Metadata" and "requestObject" not in get
