"""The Kubernetes spawner without an API server: its form and option handling (the policy's, never
KubeSpawner's profiles), the account floor applied to the pod's uid, the pod KubeSpawner builds
from our values, the start-up checks, and what of KubeSpawner is turned off.

The same behaviour on a real hub and a real control plane: tests/kubernetes/test_kube_hub.py.
"""

import pytest
from jupyterhub.objects import Hub
from jupyterhub.spawner import SpawnException
from kubespawner import KubeSpawner
from sgtest.hostile import HOSTILE, KUBESPAWNER_OPTIONS
from traitlets import TraitError
from traitlets.config import Config

from science_gateway.hub.api import TOKEN_SCOPE
from science_gateway.hub.config import check_kubernetes, kubernetes_config, merge_hub_config
from science_gateway.spawners.base import PolicySpawnerMixin
from science_gateway.spawners.kube_pod import GIB
from science_gateway.spawners.kubernetes import KubernetesSpawner

POLICY = {
    "astro": {
        "accounts": ["astro-2024", "astro-dev"],
        "partitions": {
            "cpu": {"max_cores": 2, "max_memory_gb": 4, "max_walltime_hours": 24},
            "long": {"max_cores": 1, "max_memory_gb": 2, "max_walltime_hours": 168},
            "gpu": {"max_cores": 2, "max_memory_gb": 4, "max_gpus": 1, "max_walltime_hours": 8},
        },
    },
    "students": {
        "accounts": ["teaching"],
        "partitions": {"debug": {"max_cores": 1, "max_memory_gb": 1, "max_walltime_hours": 1}},
    },
}
NODE_POOLS = {
    "cpu": {"node_selector": {"science-gateway.io/pool": "cpu"}},
    "long": {"node_selector": {"science-gateway.io/pool": "cpu"}},
    "debug": {"node_selector": {"science-gateway.io/pool": "cpu"}},
    "gpu": {
        "node_selector": {"science-gateway.io/pool": "gpu"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
}

class Group:
    def __init__(self, name):
        self.name = name


class User:
    """What the spawner reads of JupyterHub's User."""

    def __init__(self, name, groups=("astro",)):
        self.name = name
        self.id = 7
        self.escaped_name = name
        self.groups = [Group(g) for g in groups]
        self.url = f"/user/{name}/"


@pytest.fixture(autouse=True)
def kubeconfig(tmp_path, monkeypatch):
    """A kubeconfig for KubeSpawner's client set-up (nothing here calls the API server)."""
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: t\n"
        "clusters: [{name: t, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: t, user: {token: not-a-real-token}}]\n"
        "contexts: [{name: t, context: {cluster: t, user: t}}]\n"
    )
    # kubernetes_asyncio reads $KUBECONFIG once, at import: its module default is the seam
    import kubernetes_asyncio.config.kube_config as kube_config

    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))


@pytest.fixture
def api_calls(monkeypatch):
    """Every KubeSpawner start (the only way to the API server from a spawn) is recorded."""
    calls = []

    def fake_start(self):
        calls.append(self.user.name)
        raise AssertionError("KubeSpawner.start was reached")

    monkeypatch.setattr(KubeSpawner, "start", fake_start)
    return calls


def config(**spawner) -> Config:
    c = Config()
    c.ResourcePolicy.groups = POLICY
    c.KubernetesSpawner.node_pools = NODE_POOLS
    for key, value in spawner.items():
        setattr(c.KubernetesSpawner, key, value)
    return c


def make_spawner(name="demo", groups=("astro",), c=None, **spawner) -> KubernetesSpawner:
    s = KubernetesSpawner(config=c or config(**spawner), user=User(name, groups), hub=Hub(), api_token="t0ken")
    s.user_options = {}
    return s


# -- what of KubeSpawner is ours, and what is off -----------------------------------------------


async def test_the_policy_mixin_comes_first_and_kubespawner_keeps_poll_and_stop():
    mro = KubernetesSpawner.__mro__
    assert mro.index(PolicySpawnerMixin) < mro.index(KubeSpawner)
    # the reflector is the shared watch: poll and stop are KubeSpawner's, untouched
    assert KubernetesSpawner.poll is KubeSpawner.poll
    assert KubernetesSpawner.stop is KubeSpawner.stop
    assert KubernetesSpawner.progress is KubeSpawner.progress
    # start is the policy template, never KubeSpawner's directly
    assert KubernetesSpawner.start is PolicySpawnerMixin.start


async def test_the_form_is_the_policys_not_kubespawners_profiles():
    s = make_spawner()
    form = s.options_form(s)
    assert 'id="sg-partition"' in form
    assert '<option value="cpu"' in form and '<option value="gpu"' in form
    assert '<option value="debug"' not in form
    assert "profile" not in form
    student = make_spawner("student", groups=("students",))
    form = student.options_form(student)
    assert '<option value="debug"' in form and '<option value="cpu"' not in form
    assert 'name="cores" value="1" min="1" max="1"' in form


async def test_form_fields_are_parsed_by_the_policy_parser_and_profile_fields_kept_for_refusal():
    s = make_spawner()
    options = s.options_from_form({"partition": ["gpu"], "gpus": ["1"], "profile": ["x"], "_xsrf": ["t"]})
    assert options == {"partition": "gpu", "gpus": "1", "profile": "x"}
    with pytest.raises(SpawnException) as e:
        s.apply_user_options(s, options)
    assert e.value.status_code == 400 and "unknown options 'profile'" in str(e.value)
    assert s.options_from_query({"cores": ["2"]}) == {"cores": "2"}


@pytest.mark.parametrize("options", HOSTILE + KUBESPAWNER_OPTIONS)
async def test_hostile_and_kubespawner_options_are_refused_before_the_api_server(options, api_calls):
    s = make_spawner()
    s.user_options = options
    with pytest.raises(SpawnException) as e:
        await s.start()
    assert 400 <= e.value.status_code < 500, str(e.value)
    assert any(hint in str(e.value) for hint in ("allowed", "whole number", "must be")), str(e.value)
    assert api_calls == []
    # and nothing of the request reached KubeSpawner's traits
    assert s.image != "evil/image:latest" and s.uid != 0


async def test_a_configured_profile_list_is_refused_with_a_pointer_to_the_policy():
    with pytest.raises(TraitError, match="ResourcePolicy.groups"):
        make_spawner(profile_list=[{"display_name": "big", "kubespawner_override": {"cpu_limit": 64}}])
    c = config()
    c.KubeSpawner.profile_list = [{"display_name": "big"}]
    with pytest.raises(TraitError, match="KubernetesSpawner.node_pools"):
        make_spawner(c=c)


async def test_load_user_options_applies_the_request_never_a_profile():
    s = make_spawner(node_selector={"zone": "a"}, extra_labels={"team": "x"})
    s.user_options = {"partition": "gpu", "cores": "2", "memory_gb": "3", "gpus": "1", "walltime_hours": "2"}
    s.resource_request = s.validated_request(s.user_options)
    await s.load_user_options()
    assert (s.cpu_guarantee, s.cpu_limit, s.mem_limit) == (2.0, 2.0, 3 * GIB)
    assert s.extra_resource_limits == {"nvidia.com/gpu": "1"}
    assert s.node_selector == {"zone": "a", "science-gateway.io/pool": "gpu"}
    assert s.tolerations == NODE_POOLS["gpu"]["tolerations"]
    assert s.extra_labels == {"team": "x", "science-gateway.io/partition": "gpu", "science-gateway.io/account": "astro-2024"}
    assert s.extra_pod_config == {"activeDeadlineSeconds": 7200}
    # the next spawn of the same spawner object starts from the admin's values again
    s.user_options = {"partition": "cpu"}
    s.resource_request = s.validated_request(s.user_options)
    await s.load_user_options()
    assert s.extra_resource_limits == {} and s.tolerations == []
    assert s.node_selector == {"zone": "a", "science-gateway.io/pool": "cpu"}


async def test_the_pod_kubespawner_builds_from_our_values():
    s = make_spawner(guarantee_ratio=0.5)
    s.user_options = {"partition": "gpu", "cores": 2, "memory_gb": 4, "gpus": 1, "walltime_hours": 3, "account": "astro-dev"}
    s.resource_request = s.validated_request(s.user_options)
    await s.load_user_options()
    pod = s.api.api_client.sanitize_for_serialization(await s.get_pod_manifest())
    spec = pod["spec"]
    container = spec["containers"][0]
    assert container["resources"]["limits"] == {"cpu": 2.0, "memory": 4 * GIB, "nvidia.com/gpu": "1"}
    assert container["resources"]["requests"] == {"cpu": 1.0, "memory": 2 * GIB}
    assert spec["nodeSelector"] == {"science-gateway.io/pool": "gpu"}
    assert spec["tolerations"] == NODE_POOLS["gpu"]["tolerations"]
    assert spec["activeDeadlineSeconds"] == 3 * 3600
    assert spec["securityContext"]["runAsUser"] == 1000 and spec["securityContext"]["fsGroup"] == 100
    assert container["securityContext"]["runAsUser"] == 1000 and container["securityContext"]["runAsNonRoot"] is True
    assert pod["metadata"]["labels"]["science-gateway.io/account"] == "astro-dev"
    assert pod["metadata"]["annotations"]["science-gateway.io/identity"] == "demo"
    # the user's PVC is mounted at HOME
    assert {"name": "home", "persistentVolumeClaim": {"claimName": s.pvc_name}} in spec["volumes"]
    assert {"name": "home", "mountPath": "/home/jovyan"} in container["volumeMounts"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HOME"] == "/home/jovyan" and env["USER"] == "jovyan"
    assert s.storage_pvc_ensure is True
    # the default modify_pod_hook passes a good pod through
    assert await s.modify_pod_hook(s, await s.get_pod_manifest())


async def test_an_admin_hook_that_makes_the_pod_root_fails_the_spawn():
    def root_hook(spawner, pod):
        pod.spec.containers[0].security_context["runAsUser"] = 0
        return pod

    s = make_spawner(modify_pod_hook=root_hook)
    s.resource_request = s.validated_request({})
    await s.load_user_options()
    with pytest.raises(SpawnException) as e:
        await s.modify_pod_hook(s, await s.get_pod_manifest())
    assert e.value.status_code == 403 and "uid 0" in str(e.value)


# -- the account floor on the pod's uid -------------------------------------------------------------


async def test_image_mode_runs_as_the_images_user_whatever_the_hub_name():
    s = make_spawner("Alice@Example.ORG")
    account = s.checked_account(s.unix_account_name())
    assert (account.pw_name, account.pw_uid, account.pw_gid, account.pw_dir) == ("jovyan", 1000, 100, "/home/jovyan")


@pytest.mark.parametrize("uid", [0, 999])
async def test_an_image_uid_below_the_floor_is_refused_before_the_api_server(uid, api_calls):
    s = make_spawner(image_uid=uid)
    with pytest.raises(SpawnException) as e:
        await s.start()
    assert e.value.status_code == 403 and "system account" in str(e.value)
    assert api_calls == []


async def test_passwd_mode_uses_the_users_unix_account_and_refuses_root(api_calls):
    s = make_spawner(account_source="passwd")
    await s.run_auth_state_hook({"unix_account": "root"})
    with pytest.raises(SpawnException) as e:
        await s.start()
    assert e.value.status_code == 403 and "system account" in str(e.value)
    await s.run_auth_state_hook({"unix_account": "no-such-user-here"})
    with pytest.raises(SpawnException) as e:
        await s.start()
    assert e.value.status_code == 403 and "no unix account" in str(e.value)
    assert api_calls == []


# -- start-up checks --------------------------------------------------------------------------------


def test_a_partition_without_a_node_pool_stops_the_hub():
    c = config()
    c.JupyterHub.spawner_class = "science-gateway-kubernetes"
    c.KubernetesSpawner.node_pools = {k: v for k, v in NODE_POOLS.items() if k != "gpu"}
    with pytest.raises(ValueError, match="partitions gpu of ResourcePolicy.groups have no node pool"):
        check_kubernetes(c)


@pytest.mark.parametrize("section", ["KubeSpawner", "KubernetesSpawner"])
def test_a_profile_list_stops_the_hub(section):
    c = config()
    getattr(c, section).profile_list = [{"display_name": "x"}]
    with pytest.raises(ValueError, match="ResourcePolicy.groups"):
        check_kubernetes(c)


def test_a_node_pool_typo_stops_the_hub():
    c = config()
    c.JupyterHub.spawner_class = "science-gateway-kubernetes"
    c.KubernetesSpawner.node_pools = {**NODE_POOLS, "cpu": {"nodeSelector": {}}}
    with pytest.raises(ValueError, match=r"node_pools\['cpu'\].*unknown: nodeSelector"):
        check_kubernetes(c)


def test_kubernetes_config_has_the_gateway_pieces_and_none_of_the_demos(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "ResourcePolicy:\n  groups:\n    astro:\n      partitions:\n        cpu: {max_cores: 1}\n"
        "KubernetesSpawner:\n  node_pools:\n    cpu: {}\n"
    )
    c = kubernetes_config({"SCIENCE_GATEWAY_CONFIG": str(path)})
    assert c.JupyterHub.spawner_class == "science-gateway-kubernetes"
    assert list(c.JupyterHub.custom_scopes) == [TOKEN_SCOPE]
    assert {r["name"] for r in c.JupyterHub.load_roles} == {"user"}
    assert c.Spawner.server_token_scopes
    for local in ("bind_url", "db_url", "authenticator_class", "cookie_secret_file"):
        assert local not in c.JupyterHub, local
    assert "DemoAuthenticator" not in c and "LocalSpawner" not in c
    assert "environment" not in c.Spawner
    # merged into a Zero to JupyterHub config: its roles stay, ours are added
    z2jh = Config()
    z2jh.JupyterHub.load_roles = [{"name": "jupyterhub-idle-culler", "scopes": ["list:users"]}]
    merged = merge_hub_config(z2jh, c)
    assert [r["name"] for r in merged.JupyterHub.load_roles] == ["jupyterhub-idle-culler", "user"]


def test_kubernetes_config_refuses_a_broken_policy(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text("ResourcePolicy:\n  groups:\n    astro:\n      partitions:\n        cpu: {max_core: 1}\n")
    with pytest.raises(ValueError, match="max_core"):
        kubernetes_config({"SCIENCE_GATEWAY_CONFIG": str(path)})


async def test_a_start_is_counted_with_its_wait_for_the_pod(monkeypatch):
    """The hub's metrics (/hub/metrics, the default registry): a started pod's wait and the
    spawn's outcome, from the policy template (KubeSpawner's start stands in for the API server)."""
    import asyncio

    from prometheus_client import REGISTRY

    async def pod_runs_after_a_while(self):
        await asyncio.sleep(0.2)
        return ("10.0.0.7", 8888)

    monkeypatch.setattr(KubeSpawner, "start", pod_runs_after_a_while)

    def sample(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0.0

    waits = sample("science_gateway_queue_wait_seconds_count", backend="kubernetes")
    waited = sample("science_gateway_queue_wait_seconds_sum", backend="kubernetes")
    spawned = sample("science_gateway_spawns_total", backend="kubernetes", outcome="success")
    assert await make_spawner().start() == ("10.0.0.7", 8888)
    assert sample("science_gateway_queue_wait_seconds_count", backend="kubernetes") == waits + 1
    assert 0.2 <= sample("science_gateway_queue_wait_seconds_sum", backend="kubernetes") - waited < 5
    assert sample("science_gateway_spawns_total", backend="kubernetes", outcome="success") == spawned + 1
    refused = make_spawner()
    refused.user_options = {"cores": 999}
    before = sample("science_gateway_spawns_total", backend="kubernetes", outcome="refused-options")
    with pytest.raises(SpawnException):
        await refused.start()
    assert sample("science_gateway_spawns_total", backend="kubernetes", outcome="refused-options") == before + 1
