"""The pure Kubernetes builders: a validated request and a node pool -> KubeSpawner's trait values,
and the never-root check of a finished pod manifest. Plain asserts, no API server."""

import pytest
from traitlets.config import Config

from science_gateway.core.policy import ResourcePolicy
from science_gateway.core.typed import build_typed
from science_gateway.spawners.kube_pod import (
    GIB,
    PER_SPAWN_TRAITS,
    NodePool,
    PodAccount,
    label_value,
    run_as_problems,
    spawner_values,
)

GPU_POOL = NodePool(
    node_selector={"science-gateway.io/pool": "gpu"},
    tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
)
CPU_POOL = NodePool(node_selector={"science-gateway.io/pool": "cpu"})
ACCOUNT = PodAccount(uid=1000, gid=100)


def policy() -> ResourcePolicy:
    c = Config()
    c.ResourcePolicy.groups = {
        "astro": {
            "accounts": ["astro-2024"],
            "partitions": {
                "cpu": {"max_cores": 4, "max_memory_gb": 8, "max_walltime_hours": 24},
                "gpu": {"max_cores": 2, "max_memory_gb": 4, "max_gpus": 2, "max_walltime_hours": 8},
            },
        }
    }
    return ResourcePolicy(config=c)


def request(**options):
    return policy().validate(["astro"], options)


def values(req, pool=CPU_POOL, base=None, **kwargs):
    return spawner_values(req, pool, ACCOUNT, base=base or {}, identity="alice@example.org", gateway="gw", **kwargs)


def test_cores_memory_walltime_become_requests_limits_and_a_deadline():
    v = values(request(partition="cpu", cores=3, memory_gb=6, walltime_hours=2))
    assert (v["cpu_guarantee"], v["cpu_limit"]) == (3.0, 3.0)
    assert (v["mem_guarantee"], v["mem_limit"]) == (6 * GIB, 6 * GIB)
    assert v["extra_pod_config"] == {"activeDeadlineSeconds": 7200}
    assert v["extra_resource_limits"] == {}
    assert set(v) == set(PER_SPAWN_TRAITS)


def test_gpus_become_an_nvidia_limit_and_the_pool_places_the_pod():
    v = values(request(partition="gpu", gpus=2), pool=GPU_POOL)
    assert v["extra_resource_limits"] == {"nvidia.com/gpu": "2"}
    assert v["node_selector"] == {"science-gateway.io/pool": "gpu"}
    assert v["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_a_guarantee_ratio_lowers_only_the_requests():
    v = values(request(partition="cpu", cores=4, memory_gb=8), guarantee_ratio=0.25)
    assert (v["cpu_guarantee"], v["cpu_limit"]) == (1.0, 4.0)
    assert (v["mem_guarantee"], v["mem_limit"]) == (2 * GIB, 8 * GIB)
    with pytest.raises(ValueError, match="guarantee_ratio"):
        values(request(), guarantee_ratio=0)


def test_account_partition_identity_in_labels_and_annotations():
    v = values(request(partition="cpu"))
    assert v["extra_labels"] == {"science-gateway.io/partition": "cpu", "science-gateway.io/account": "astro-2024"}
    assert v["extra_annotations"] == {
        "science-gateway.io/identity": "alice@example.org",
        "science-gateway.io/gateway": "gw",
        "science-gateway.io/account": "astro-2024",
    }


def test_the_pod_runs_as_the_account_never_root():
    v = values(request())
    assert (v["uid"], v["gid"], v["fs_gid"]) == (1000, 100, 100)
    for context in (v["pod_security_context"], v["container_security_context"]):
        assert context == {"runAsUser": 1000, "runAsGroup": 100, "runAsNonRoot": True}


def test_the_admins_values_are_kept_and_ours_merged_in():
    base = {
        "node_selector": {"zone": "a"},
        "tolerations": [{"key": "site", "operator": "Exists"}],
        "extra_labels": {"team": "x"},
        "extra_annotations": {"note": "y"},
        "extra_resource_limits": {"example.com/fpga": "1", "nvidia.com/gpu": "9"},
        "extra_pod_config": {"priorityClassName": "interactive"},
        "container_security_context": {"readOnlyRootFilesystem": True, "runAsUser": 0},
        "cpu_limit": 64.0,
    }
    v = values(request(partition="gpu", gpus=1), pool=GPU_POOL, base=base)
    assert v["node_selector"] == {"zone": "a", "science-gateway.io/pool": "gpu"}
    assert v["tolerations"][0] == {"key": "site", "operator": "Exists"} and len(v["tolerations"]) == 2
    assert v["extra_labels"]["team"] == "x" and v["extra_annotations"]["note"] == "y"
    # the admin's other extended resources stay; the GPU count is the request's, never the base's
    assert v["extra_resource_limits"] == {"example.com/fpga": "1", "nvidia.com/gpu": "1"}
    assert v["extra_pod_config"] == {"priorityClassName": "interactive", "activeDeadlineSeconds": 3600}
    # the request decides cpu; the account decides the uid, whatever the base said
    assert v["cpu_limit"] == 1.0
    assert v["container_security_context"] == {
        "readOnlyRootFilesystem": True, "runAsUser": 1000, "runAsGroup": 100, "runAsNonRoot": True,
    }
    # the base itself is not changed (the next spawn starts from it again)
    assert base["node_selector"] == {"zone": "a"} and len(base["tolerations"]) == 1


def test_no_gpu_request_removes_a_gpu_limit_of_the_base():
    v = values(request(partition="cpu"), base={"extra_resource_limits": {"nvidia.com/gpu": "1"}})
    assert v["extra_resource_limits"] == {}


@pytest.mark.parametrize(
    "text,expected",
    [("astro-2024", "astro-2024"), ("a" * 63, "a" * 63), ("a" * 64, ""), ("-x", ""), ("x.", ""), ("", "")],
    ids=["name", "63-chars", "64-chars", "leading-dash", "trailing-dot", "empty"],
)
def test_label_values(text, expected):
    assert label_value(text) == expected


@pytest.mark.parametrize(
    "pool,message",
    [
        ({"node_selector": {"a": 1}}, "node_selector"),
        ({"tolerations": [{"key": "k", "operator": "Maybe"}]}, "Equal or Exists"),
        ({"tolerations": [{"key": "k", "effect": "Sometimes"}]}, "effect must be"),
        ({"tolerations": [{"key": "k", "colour": "red"}]}, "unknown keys"),
        ({"nodeSelector": {}}, "unknown keys"),
    ],
    ids=["selector-not-a-string", "bad-operator", "bad-effect", "toleration-typo", "pool-typo"],
)
def test_node_pool_typos_are_named(pool, message):
    with pytest.raises(ValueError, match=message):
        build_typed(NodePool, pool, "KubernetesSpawner.node_pools['x']")


def manifest(pod_uid=None, container_uid=None, privileged=False, init_uid="same"):
    spec = {"containers": [{"name": "notebook", "securityContext": {}}]}
    if pod_uid is not None:
        spec["securityContext"] = {"runAsUser": pod_uid}
    if container_uid is not None:
        spec["containers"][0]["securityContext"]["runAsUser"] = container_uid
    if privileged:
        spec["containers"][0]["securityContext"]["privileged"] = True
    if init_uid != "same":
        spec["initContainers"] = [{"name": "init", "securityContext": {"runAsUser": init_uid}}]
    return {"spec": spec}


@pytest.mark.parametrize(
    "pod,problem",
    [
        (manifest(container_uid=1000), None),
        (manifest(pod_uid=1001), None),
        (manifest(pod_uid=1000, container_uid=0), "uid 0"),
        (manifest(), "no runAsUser"),
        (manifest(pod_uid=999), "uid 999"),
        (manifest(container_uid=1000, privileged=True), "privileged"),
        (manifest(container_uid=1000, init_uid=0), "'init' would run as uid 0"),
    ],
    ids=["container-uid", "pod-uid", "container-root-overrides-pod", "no-uid", "system-uid", "privileged", "init-root"],
)
def test_run_as_problems(pod, problem):
    problems = run_as_problems(pod, min_uid=1000)
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems
