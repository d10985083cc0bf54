"""Jupyter servers as Kubernetes pods: KubeSpawner 7, driven by the group policy.

:class:`KubernetesSpawner` (entry point ``science-gateway-kubernetes``, extra ``kubernetes``) is
``class KubernetesSpawner(PolicySpawnerMixin, kubespawner.KubeSpawner)``: KubeSpawner configured
and extended at its documented points (traits, ``load_user_options``, ``modify_pod_hook``), not
forked. Every stock ``KubeSpawner.*`` setting (image, namespace, storage, hub_connect_url, ...)
works as documented by KubeSpawner, except those listed under "turned off" below.

What users get, from the same :class:`~science_gateway.core.policy.ResourcePolicy` as on Slurm:

- **The same form and the same server-side validation.** ``options_form``, ``options_from_form``,
  ``options_from_query`` and ``apply_user_options`` are :class:`~.base.PolicySpawnerMixin`'s; every
  ``user_options`` (form, spawn URL, REST API) is validated against the policy, and again in
  ``start`` before anything reaches the API server. A refused request creates no pod and no PVC.
- **A partition is a node pool**: :attr:`KubernetesSpawner.node_pools` maps each policy partition
  to a node selector and tolerations. Cores become the pod's cpu limit, memory (GiB) its memory
  limit, and the requests are :attr:`guarantee_ratio` of them (1, the default: the same); GPUs
  an ``nvidia.com/gpu`` limit, the walltime the pod's ``activeDeadlineSeconds`` (Kubernetes ends
  the pod when it is over, as Slurm ends a job), and the account and partition labels
  (``science-gateway.io/account``, ``.../partition``) beside annotations with the user's
  federated identity. The mapping is the pure :func:`~.kube_pod.spawner_values`.
- **Never root.** The pod runs as the account of :meth:`account_entry`: with
  ``account_source = "image"`` (the default) the image's fixed user (:attr:`image_user`,
  :attr:`image_uid` 1000, :attr:`image_gid` 100: Zero to JupyterHub's ``jovyan``); with
  ``"passwd"`` the user's own unix account (``auth_state["unix_account"]``, else the hub username)
  from the hub's passwd, for sites whose nodes share it. The mixin's floor (``min_uid``) applies
  to that uid; uid, gid and fsGroup are set from it, both security contexts get ``runAsNonRoot``,
  and the finished pod (after any admin ``modify_pod_hook``) is checked once more: a container
  that would run below the floor or privileged fails the spawn with 403 before the pod exists.
- **Per-user persistent storage** by default: KubeSpawner's ``storage_pvc_ensure`` (on), a PVC of
  ``storage_capacity`` (10Gi) in ``storage_class`` (the cluster's default class when empty),
  mounted at :attr:`image_home`.
- **The scheduler's word on the spawn page**: KubeSpawner's ``progress()`` shows the pod's events
  from its event reflector, e.g. ``0/2 nodes are available: 2 Insufficient cpu`` while a pod pends.
- **One watch for all users**: ``poll()`` is KubeSpawner's, answered from its shared pod
  reflector (one list+watch per namespace for the whole hub, no per-user API calls). After a hub
  restart running pods are re-adopted from the saved state; a pod deleted behind the hub's back
  is noticed at the next poll and the user can start again.
- **The server command** is ``jupyterhub-singleuser`` (KubeSpawner's ``cmd``, as Zero to
  JupyterHub's ``singleuser.cmd``) with the hub's ``args``, so server-side settings passed as
  ``KubernetesSpawner.args`` (the chart's catalogue settings) reach it whatever the image's CMD.
- In the pod the server reaches the hub at ``JupyterHub.hub_connect_url`` (``JUPYTERHUB_API_URL``),
  so the token keeper, the catalogue API and the widgets work as elsewhere; the image must have
  the gateway installed (the gateway's singleuser image does).

What of KubeSpawner this class turns off (each is tested to be off):

- **profile_list and everything built on it**: ``profile_list``, ``profile_form_template``,
  ``additional_profile_form_template_paths``, the ``profile`` and ``profile-option-*`` form fields,
  ``*--unlisted-choice`` values and ``kubespawner_override``. KubeSpawner's ``load_user_options``
  (which applies a profile's overrides to any trait) is replaced by one that applies only the
  validated request; a user option named ``profile`` or anything else the policy does not know
  is refused with 400. A configured non-empty ``profile_list`` stops the hub at start-up (in
  :func:`science_gateway.hub.config.kubernetes_config`, and here when the spawner is built) with
  a message pointing at ``ResourcePolicy.groups`` and ``KubernetesSpawner.node_pools``.
- **Per-spawn traits** (set from the request at each start, so a site's own value of them is a
  base or is replaced): ``cpu_guarantee``, ``cpu_limit``, ``mem_guarantee``, ``mem_limit``,
  ``uid``, ``gid``, ``fs_gid`` are replaced; ``node_selector``, ``tolerations``,
  ``extra_labels``, ``extra_annotations``, ``extra_resource_limits``, ``extra_pod_config`` and
  the two security contexts keep the admin's entries and get ours merged in
  (:data:`~.kube_pod.PER_SPAWN_TRAITS`).
- ``modify_pod_hook`` still works; the admin's hook is wrapped so the never-root check runs on
  its result.

Override ladder (subclasses, in increasing depth): the traits; :meth:`job_identity`,
:meth:`account_entry`, :meth:`node_pool`; :meth:`load_user_options`. Do not override ``start``
(the policy template of :class:`~.base.PolicySpawnerMixin`), :meth:`start_job`, ``poll`` or
``stop``.
"""

from __future__ import annotations

import copy
import pwd
import time

from jupyterhub.spawner import SpawnException
from jupyterhub.utils import maybe_future
from kubespawner import KubeSpawner
from traitlets import Dict, Enum, Float, Integer, TraitError, Unicode, default, validate

from ..core.policy import ResourceRequest
from ..core.typed import build_typed
from .base import PolicySpawnerMixin
from .kube_pod import PER_SPAWN_TRAITS, NodePool, PodAccount, run_as_problems, spawner_values

PROFILE_LIST_REFUSED = (
    "KubeSpawner.profile_list is not used by the Science Gateway's Kubernetes spawner: a profile's "
    "kubespawner_override would let a form choice set any spawner setting. Describe what each group "
    "may use in ResourcePolicy.groups (partitions, limits, accounts) and map each partition to a "
    "node pool in KubernetesSpawner.node_pools; see docs/kubernetes.md."
)


def _check_pod(spawner, pod):
    """The last look at a pod before it is created: never root, never privileged."""
    manifest = pod if isinstance(pod, dict) else spawner.api.api_client.sanitize_for_serialization(pod)
    problems = run_as_problems(manifest, spawner.min_uid)
    if problems:
        raise SpawnException(
            f"the server's pod would not run as a personal account ({'; '.join(problems)}); "
            "ask the gateway admins to fix the pod settings",
            reason="unix_account",
            status_code=403,
        )
    return pod


def _guarded(hook):
    """``hook`` (an admin's modify_pod_hook, or none), then :func:`_check_pod` on its result."""
    if getattr(hook, "_science_gateway_guarded", False):
        return hook

    async def guarded_modify_pod_hook(spawner, pod):
        if hook is not None:
            pod = await maybe_future(hook(spawner, pod))
        return _check_pod(spawner, pod)

    guarded_modify_pod_hook._science_gateway_guarded = True
    return guarded_modify_pod_hook


class KubernetesSpawner(PolicySpawnerMixin, KubeSpawner):
    """Start each user's Jupyter server as a Kubernetes pod, within the group resource policy."""

    metrics_backend = "kubernetes"

    node_pools = Dict(
        help="""
        Policy partition -> node pool: where that partition's pods run. Each value takes
        ``node_selector`` (node labels, e.g. ``{"science-gateway.io/pool": "gpu"}``) and
        ``tolerations`` (Kubernetes' toleration objects, e.g. ``[{"key": "nvidia.com/gpu",
        "operator": "Exists", "effect": "NoSchedule"}]``). Every partition named in
        ResourcePolicy.groups needs an entry (``{}``: any node); a missing one stops the hub at
        start-up.
        """,
    ).tag(config=True)

    @validate("node_pools")
    def _build_node_pools(self, proposal):
        try:
            return {
                name: build_typed(NodePool, pool, f"KubernetesSpawner.node_pools[{name!r}]")
                for name, pool in proposal.value.items()
            }
        except ValueError as e:
            raise TraitError(str(e)) from None

    account_source = Enum(
        ["image", "passwd"],
        "image",
        help="""
        Whose uid a pod runs as. ``image``: the image's fixed user (image_user, image_uid,
        image_gid; Zero to JupyterHub's jovyan, 1000/100), the same for every user. ``passwd``:
        the user's unix account (auth_state["unix_account"], else the hub username) looked up in
        the hub's passwd, for sites whose nodes and storage use real accounts. Either way the uid
        must be at least min_uid (never root) or the spawn fails with 403.
        """,
    ).tag(config=True)
    image_user = Unicode("jovyan", help="Name of the image's user (account_source 'image'): USER in the pod.").tag(
        config=True
    )
    image_uid = Integer(1000, help="uid the pods run as with account_source 'image'.").tag(config=True)
    image_gid = Integer(100, help="gid (and fsGroup) of the pods with account_source 'image'.").tag(config=True)
    image_home = Unicode(
        "/home/jovyan",
        help="HOME in the pod, where the default volume_mounts mount the user's PVC (account_source 'image').",
    ).tag(config=True)
    guarantee_ratio = Float(
        1.0,
        help="""
        Share of the requested cores and memory the scheduler reserves (the pod's requests); the
        limits are always what the user asked for. 1 (the default): every server gets all it
        asked for. Below 1 (above 0): more servers fit on a node, at the risk of contention.
        """,
    ).tag(config=True)

    @validate("guarantee_ratio")
    def _check_guarantee_ratio(self, proposal):
        if not 0 < proposal.value <= 1:
            raise TraitError(f"KubernetesSpawner.guarantee_ratio must be above 0 and at most 1, got {proposal.value}")
        return proposal.value

    gateway_name = Unicode(
        "science-gateway", help="Name of this gateway, in each pod's science-gateway.io/gateway annotation."
    ).tag(config=True)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.profile_list:
            raise TraitError(PROFILE_LIST_REFUSED)
        # the admin's values of the traits each spawn sets (spawner_values merges into these)
        self._admin_values = {name: copy.deepcopy(getattr(self, name)) for name in PER_SPAWN_TRAITS}

    # -- defaults of KubeSpawner's traits -------------------------------------------------------

    @default("modify_pod_hook")
    def _modify_pod_hook_default(self):
        return _guarded(None)

    @validate("modify_pod_hook")
    def _guard_modify_pod_hook(self, proposal):
        return _guarded(proposal.value)

    @default("cmd")
    def _cmd_default(self):
        # as Zero to JupyterHub's singleuser.cmd: the server, whatever the image's CMD, with our args
        return ["jupyterhub-singleuser"]

    @default("storage_pvc_ensure")
    def _storage_pvc_ensure_default(self):
        return True

    @default("storage_capacity")
    def _storage_capacity_default(self):
        return "10Gi"

    @default("volumes")
    def _volumes_default(self):
        return [{"name": "home", "persistentVolumeClaim": {"claimName": "{pvc_name}"}}]

    @default("volume_mounts")
    def _volume_mounts_default(self):
        return [{"name": "home", "mountPath": self.image_home}]

    @default("working_dir")
    def _working_dir_default(self):
        return self.image_home if self.account_source == "image" else ""

    @default("start_timeout")
    def _start_timeout_default(self):
        return 600

    # -- the account ------------------------------------------------------------------------

    def unix_account_name(self) -> str:
        if self.account_source == "image":
            return self.image_user
        return super().unix_account_name()

    def account_entry(self, name: str) -> pwd.struct_passwd:
        """``account_source`` 'image': the image's user (whatever the hub's passwd holds);
        'passwd': the hub's passwd."""
        if self.account_source == "image":
            if name != self.image_user:
                raise KeyError(name)
            return pwd.struct_passwd((name, "x", self.image_uid, self.image_gid, "", self.image_home, "/bin/bash"))
        return super().account_entry(name)

    def get_env(self):
        """KubeSpawner's environment plus USER, HOME and SHELL of the account the pod runs as."""
        env = super().get_env()
        account = self.unix_account()
        env.update(USER=account.pw_name, HOME=account.pw_dir)
        if account.pw_shell:
            env["SHELL"] = account.pw_shell
        return env

    # -- the request -> the pod ----------------------------------------------------------------

    def node_pool(self, partition: str) -> NodePool:
        """The node pool of ``partition``, or a 500 SpawnException telling the admins what to add."""
        pool = self.node_pools.get(partition)
        if pool is None:
            raise SpawnException(
                f"partition {partition!r} has no node pool on this gateway's cluster; "
                f"the gateway admins must add it to KubernetesSpawner.node_pools",
                reason="node_pools",
                status_code=500,
            )
        return pool

    async def load_user_options(self):
        """KubeSpawner calls this at the start of every spawn. Ours applies the validated request
        (and the checked account) to the per-spawn traits; KubeSpawner's profile handling, which
        lets a profile set any trait, is not used."""
        request = self.resource_request or self.validated_request(dict(self.user_options or {}))
        account = self.unix_account()
        values = spawner_values(
            request,
            self.node_pool(request.partition),
            PodAccount(uid=account.pw_uid, gid=account.pw_gid),
            base=self._admin_values,
            identity=self.job_identity(),
            gateway=self.gateway_name,
            guarantee_ratio=self.guarantee_ratio,
        )
        for name, value in values.items():
            setattr(self, name, value)

    async def start_job(self, request: ResourceRequest, account: pwd.struct_passwd):
        """KubeSpawner's start (PVC, pod, wait for it to run) for the validated request."""
        self.node_pool(request.partition)  # fail before the PVC when the admins left a pool out
        submitted = time.monotonic()
        result = await KubeSpawner.start(self)  # returns once the pod runs (scheduled, image pulled)
        self.observe_queue_wait(time.monotonic() - submitted)
        return result
