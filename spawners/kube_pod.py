"""Pure builders for Kubernetes: a validated request and a node pool -> KubeSpawner's trait values.

No I/O here (the model is :mod:`.slurm_script`): :func:`spawner_values` takes a validated
:class:`~science_gateway.core.policy.ResourceRequest`, the :class:`NodePool` its partition maps to,
the account the pod runs as and the admin's own values of the same traits, and returns the values
:class:`~.kubernetes.KubernetesSpawner` sets on itself before KubeSpawner builds the pod:

========================  =================================================================
request / pool            KubeSpawner trait (what the pod gets)
========================  =================================================================
cores                     ``cpu_limit`` (``resources.limits.cpu``) and ``cpu_guarantee`` (requests)
memory_gb (GiB)           ``mem_limit`` and ``mem_guarantee`` (bytes)
gpus                      ``extra_resource_limits["nvidia.com/gpu"]`` (none when 0)
walltime_hours            ``extra_pod_config["activeDeadlineSeconds"]``
partition -> node pool    ``node_selector`` (merged), ``tolerations`` (appended)
account, partition        ``extra_labels`` ``science-gateway.io/account``, ``.../partition``
identity, gateway         ``extra_annotations`` ``science-gateway.io/identity``, ``.../gateway``
the account's uid/gid     ``uid``, ``gid``, ``fs_gid``; ``runAsNonRoot`` in both security contexts
========================  =================================================================

The guarantees equal the limits unless the admin sets a ``guarantee_ratio`` below 1 (requests
are then that share of the limits: more servers per node, no promise that all may use their limits
at once). The admin's own node selector, tolerations, labels, annotations, extra resource limits and extra
pod config are kept (ours are merged in); cpu, memory and the uid always come from the request and
the checked account. :func:`run_as_problems` checks a finished pod manifest (after every hook):
each container must run as a uid of at least the floor, never privileged.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

from traitlets import Dict, HasTraits, List, Unicode, validate

from ..core.policy import ResourceRequest

GPU_RESOURCE = "nvidia.com/gpu"
LABEL_PREFIX = "science-gateway.io/"
GIB = 1024**3

#: KubeSpawner traits that spawner_values sets at each spawn (the admin's value is the base)
PER_SPAWN_TRAITS = (
    "cpu_guarantee",
    "cpu_limit",
    "mem_guarantee",
    "mem_limit",
    "extra_resource_limits",
    "node_selector",
    "tolerations",
    "extra_labels",
    "extra_annotations",
    "extra_pod_config",
    "pod_security_context",
    "container_security_context",
    "uid",
    "gid",
    "fs_gid",
)

#: a Kubernetes label value: 63 characters at most, alphanumerics at both ends
_LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?$")
_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
_TOLERATION_OPERATORS = {"Equal", "Exists"}
_TOLERATION_EFFECTS = {"", "NoSchedule", "PreferNoSchedule", "NoExecute"}


class NodePool(HasTraits):
    """Where one partition's pods go (one entry of ``KubernetesSpawner.node_pools``)."""

    node_selector = Dict(
        value_trait=Unicode(),
        key_trait=Unicode(),
        help="Node labels a pod of this pool must match, e.g. ``{'science-gateway.io/pool': 'gpu'}``.",
    )
    tolerations = List(
        Dict(),
        help="""
        Tolerations of this pool's pods (Kubernetes' shape: ``key``, ``operator`` Equal/Exists,
        ``value``, ``effect``), e.g. for GPU nodes tainted ``nvidia.com/gpu=present:NoSchedule``.
        """,
    )

    @validate("tolerations")
    def _check_tolerations(self, proposal):
        for i, toleration in enumerate(proposal.value):
            unknown = sorted(set(toleration) - _TOLERATION_KEYS)
            if unknown:
                raise ValueError(f"toleration {i}: unknown keys {unknown}; known: {sorted(_TOLERATION_KEYS)}")
            if toleration.get("operator", "Equal") not in _TOLERATION_OPERATORS:
                raise ValueError(f"toleration {i}: operator must be Equal or Exists, got {toleration['operator']!r}")
            if toleration.get("effect", "") not in _TOLERATION_EFFECTS:
                raise ValueError(
                    f"toleration {i}: effect must be one of NoSchedule, PreferNoSchedule, NoExecute, "
                    f"got {toleration['effect']!r}"
                )
        return [dict(t) for t in proposal.value]


@dataclass(frozen=True)
class PodAccount:
    """The ids a pod runs as (from a checked passwd entry)."""

    uid: int
    gid: int


def label_value(text: str) -> str:
    """``text`` if it is a valid label value, else '' (labels are for selecting; annotations keep all)."""
    return text if _LABEL_VALUE_RE.fullmatch(text) else ""


def spawner_values(
    request: ResourceRequest,
    pool: NodePool,
    account: PodAccount,
    *,
    base: dict,
    identity: str,
    gateway: str,
    guarantee_ratio: float = 1.0,
) -> dict:
    """The :data:`PER_SPAWN_TRAITS` values for one spawn. ``base`` holds the admin's values of those
    traits (what the spawner had before any spawn); it is not changed. The limits are what the
    user asked for; the guarantees (what the scheduler reserves) are ``guarantee_ratio`` of them."""
    if not 0 < guarantee_ratio <= 1:
        raise ValueError(f"guarantee_ratio must be above 0 and at most 1, got {guarantee_ratio}")
    base = copy.deepcopy(base)
    limits = {k: v for k, v in (base.get("extra_resource_limits") or {}).items() if k != GPU_RESOURCE}
    if request.gpus:
        limits[GPU_RESOURCE] = str(request.gpus)
    labels = {**(base.get("extra_labels") or {}), f"{LABEL_PREFIX}partition": request.partition}
    if request.account and label_value(request.account):
        labels[f"{LABEL_PREFIX}account"] = request.account
    annotations = {
        **(base.get("extra_annotations") or {}),
        f"{LABEL_PREFIX}identity": identity,
        f"{LABEL_PREFIX}gateway": gateway,
    }
    if request.account:
        annotations[f"{LABEL_PREFIX}account"] = request.account
    non_root = {"runAsUser": account.uid, "runAsGroup": account.gid, "runAsNonRoot": True}
    return {
        "cpu_guarantee": round(request.cores * guarantee_ratio, 3),
        "cpu_limit": float(request.cores),
        "mem_guarantee": int(request.memory_gb * GIB * guarantee_ratio),
        "mem_limit": request.memory_gb * GIB,
        "extra_resource_limits": limits,
        "node_selector": {**(base.get("node_selector") or {}), **pool.node_selector},
        "tolerations": [*(base.get("tolerations") or []), *copy.deepcopy(pool.tolerations)],
        "extra_labels": labels,
        "extra_annotations": annotations,
        "extra_pod_config": {**(base.get("extra_pod_config") or {}), "activeDeadlineSeconds": request.walltime_hours * 3600},
        "pod_security_context": {**(base.get("pod_security_context") or {}), **non_root},
        "container_security_context": {**(base.get("container_security_context") or {}), **non_root},
        "uid": account.uid,
        "gid": account.gid,
        "fs_gid": account.gid,
    }


def run_as_problems(pod: dict, min_uid: int) -> list[str]:
    """What is wrong with the users of a pod manifest (the API's JSON shape, camelCase): each
    container and init container must run as a uid of at least ``min_uid`` (its own
    ``securityContext.runAsUser``, else the pod's) and must not be privileged. Empty: fine."""
    spec = pod.get("spec") or {}
    pod_context = spec.get("securityContext") or {}
    problems = []
    for kind in ("initContainers", "containers"):
        for container in spec.get(kind) or []:
            context = container.get("securityContext") or {}
            uid = context.get("runAsUser", pod_context.get("runAsUser"))
            name = container.get("name", "?")
            if uid is None:
                problems.append(f"container {name!r} sets no runAsUser (it would run as the image's user, maybe root)")
            elif int(uid) < min_uid:
                problems.append(f"container {name!r} would run as uid {uid}, below {min_uid}")
            if context.get("privileged"):
                problems.append(f"container {name!r} is privileged")
    return problems
