"""The Helm chart helm/science-gateway with the real helm binary (KUBE_HELM of kubernetes.env).

Renders with the ``jupyterhub`` dependency off (it cannot be downloaded here; see
sgtest.chart.staged_chart), validates every manifest against Kubernetes' schemas, the
``jupyterhub:`` values against Zero to JupyterHub's, loads the rendered gateway.yaml the way the
hub does, and installs, upgrades and uninstalls the chart on the local API server.
"""

import base64
import copy
import json
import uuid
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import requests
import yaml
from sgtest.chart import (
    CHART, DEPENDENCY_OFF, E2E_VALUES, EXAMPLE_VALUES, HUB_CONFIG_SECRET, gateway_yaml, helm, render,
    render_gateway_config, staged_chart, z2jh_overlay_schema,
)
from sgtest.services import missing, service_env
from traitlets.config import Config
from traitlets.config.loader import KVArgParseConfigLoader

from science_gateway.core.typed import check_settings
from science_gateway.hub import config as hub_config

VALUE_SETS = {"defaults": (), "example": ("-f", EXAMPLE_VALUES), "e2e": ("-f", E2E_VALUES)}
#: the oldest Kubernetes the issue names and the newest schema kubernetes-validate ships
KUBE_VERSIONS = ("1.28.0", kubernetes_validate.latest_version())


def chart_values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def example_values() -> dict:
    return yaml.safe_load(EXAMPLE_VALUES.read_text())


def merged(base: dict, over: dict) -> dict:
    """helm's coalescing of a values file over the chart's values (maps merge, the rest replaces)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.fixture
def chart(tmp_path):
    return staged_chart(tmp_path)


# --- lint and template ---------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUE_SETS)
def test_helm_lint(chart, values):
    result = helm("lint", "--strict", chart, *DEPENDENCY_OFF, *VALUE_SETS[values], check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", VALUE_SETS)
def test_every_manifest_validates_strictly(chart, values, version):
    manifests = render(chart, *DEPENDENCY_OFF, *VALUE_SETS[values])
    assert sorted(m["kind"] for m in manifests) == ["NetworkPolicy", "Secret"]
    for manifest in manifests:
        kubernetes_validate.validate(manifest, version, strict=True)


def test_the_validator_refuses_an_unknown_field(chart):
    """The strict validation above can fail: a field Kubernetes does not know is refused."""
    (policy,) = [m for m in render(chart, *DEPENDENCY_OFF) if m["kind"] == "NetworkPolicy"]
    policy["spec"]["egres"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(policy, KUBE_VERSIONS[0], strict=True)


def test_without_network_policy(chart):
    assert [m["kind"] for m in render(chart, *DEPENDENCY_OFF, "--set", "networkPolicy.enabled=false")] == ["Secret"]


# --- the values: our schema, Zero to JupyterHub's schema --------------------------------------


@pytest.mark.parametrize("setting, named", [
    ("gateway.policy.grups.astro.accounts={a}", "grups"),
    ("gateway.nodePools.cpu.nodeSelector.pool=cpu", "nodeSelector"),
    ("gateway.policy.groups.astro.partitions.cpu.max_core=4", "max_core"),
    ("networkPolicy.egres[0].name=rucio", "egres"),
    ("gateway.catalogue.class=x", "catalogue"),
    ("gatway.dask.presets=null", "gatway"),
])
def test_a_typo_fails_with_the_key_named(chart, setting, named):
    result = helm("template", "sg", chart, *DEPENDENCY_OFF, "--set", setting, check=False)
    assert result.returncode != 0
    assert f"Additional property {named} is not allowed" in result.stderr


def test_an_unknown_authenticator_is_refused(chart):
    result = helm("template", "sg", chart, *DEPENDENCY_OFF, "--set", "gateway.authenticator.class=github", check=False)
    assert result.returncode != 0
    assert "gateway.authenticator.class" in result.stderr


def test_a_partition_without_a_node_pool_is_refused(chart):
    result = helm("template", "sg", chart, *DEPENDENCY_OFF, "-f", EXAMPLE_VALUES,
                  "--set", "gateway.policy.groups.vo\\.teaching\\.example.partitions.bigmem.max_cores=2", check=False)
    assert result.returncode != 0
    assert 'gateway.policy.groups.vo.teaching.example.partitions.bigmem: no node pool "bigmem"' in result.stderr
    assert "(it has: cpu, gpu)" in result.stderr


@pytest.mark.parametrize("values", ["defaults", "example"])
def test_jupyterhub_values_validate_against_z2jh_schema(values):
    jupyterhub = chart_values()["jupyterhub"]
    if values == "example":
        jupyterhub = merged(jupyterhub, example_values()["jupyterhub"])
    jsonschema.validate(jupyterhub, z2jh_overlay_schema())


def test_z2jh_schema_refuses_a_typo():
    jupyterhub = merged(chart_values()["jupyterhub"], {"singleuser": {"storge": {"capacity": "1Gi"}}})
    with pytest.raises(jsonschema.ValidationError, match="storge"):
        jsonschema.validate(jupyterhub, z2jh_overlay_schema())


def test_helm_checks_jupyterhub_values_with_the_dependency_on(chart):
    """With the dependency on, helm itself checks the subchart's values against its schema."""
    helm("template", "sg", chart, "-f", EXAMPLE_VALUES)
    result = helm("template", "sg", chart, "--set", "jupyterhub.hub.extraEnvv.A=b", check=False)
    assert result.returncode != 0
    assert "extraEnvv" in result.stderr


def test_hub_values_mount_the_config_the_secret_holds():
    """The default jupyterhub values mount gateway.yaml where SCIENCE_GATEWAY_CONFIG points, and
    hand the client secret to the hub from the same Secret."""
    hub = chart_values()["jupyterhub"]["hub"]
    (volume,) = [v for v in hub["extraVolumes"] if v["name"] == "science-gateway-config"]
    assert volume["secret"]["secretName"] == HUB_CONFIG_SECRET
    (mount,) = [m for m in hub["extraVolumeMounts"] if m["name"] == "science-gateway-config"]
    (item,) = volume["secret"]["items"]
    assert hub["extraEnv"]["SCIENCE_GATEWAY_CONFIG"] == f"{mount['mountPath']}/{item['path']}"
    assert item["key"] == "gateway.yaml"
    ref = hub["extraEnv"]["OAUTH_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == (HUB_CONFIG_SECRET, "oidc-client-secret")


def test_images_are_the_gateways_at_the_app_version():
    chart_meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    jupyterhub = chart_values()["jupyterhub"]
    assert jupyterhub["hub"]["image"] == {"name": "ghcr.io/science-gateway/hub", "tag": chart_meta["appVersion"]}
    assert jupyterhub["singleuser"]["image"] == {"name": "ghcr.io/science-gateway/singleuser", "tag": chart_meta["appVersion"]}
    (dependency,) = chart_meta["dependencies"]
    assert (dependency["name"], dependency["condition"]) == ("jupyterhub", "jupyterhub.enabled")
    assert dependency["version"].startswith("4.") and dependency["repository"] == "https://hub.jupyter.org/helm-chart/"
    import science_gateway
    assert chart_meta["appVersion"] == science_gateway.__version__


# --- gateway.yaml: what the hub loads ---------------------------------------------------------


@pytest.mark.parametrize("values", VALUE_SETS)
def test_gateway_yaml_loads_and_passes_the_gateways_checks(tmp_path, values):
    path = render_gateway_config(tmp_path, *VALUE_SETS[values])
    config = hub_config.load_site_config(path)
    hub_config.check_policy(config)
    assert config.JupyterHub.spawner_class == "science-gateway-kubernetes"
    pools = config.KubernetesSpawner.node_pools
    for group in config.ResourcePolicy.groups.values():
        assert set(group["partitions"]) <= set(pools)
    if values == "example":
        assert config.JupyterHub.authenticator_class == "science-gateway-checkin"
        assert config.CheckinAuthenticator.client_id == "gateway.example.org"
        assert pools["gpu"]["tolerations"] == [
            {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}]
        assert config.DaskPresets.presets["small"]["max_workers"] == 8
        assert "change-me" not in path.read_text()   # the client secret has its own key


@pytest.mark.parametrize("values", VALUE_SETS)
def test_kubernetes_config_loads_the_rendered_file(tmp_path, values):
    """What the hub image's config.d file does with the Secret's gateway.yaml (checks included)."""
    if not hasattr(hub_config, "kubernetes_config"):
        pytest.skip("science_gateway.hub.config.kubernetes_config is not on this branch yet (the spawner's)")
    path = render_gateway_config(tmp_path, *VALUE_SETS[values])
    config = hub_config.kubernetes_config({hub_config.CONFIG_ENV: str(path)})
    assert config.JupyterHub.spawner_class == "science-gateway-kubernetes"
    assert dict(config.ResourcePolicy.groups) == yaml.safe_load(path.read_text())["ResourcePolicy"]["groups"]


def test_e2e_values_are_the_e2e_policy(tmp_path):
    """The end-to-end tests' values: the test nodes' pools, GPUs tolerated, a pool for every partition."""
    config = hub_config.load_site_config(render_gateway_config(tmp_path, "-f", E2E_VALUES))
    pools = config.KubernetesSpawner.node_pools
    assert set(pools) == {"cpu", "long", "debug", "huge", "gpu"}
    assert pools["gpu"]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert {p["node_selector"]["science-gateway.io/pool"] for p in pools.values()} == {"cpu", "gpu"}
    assert set(config.ResourcePolicy.groups) == {"astro", "students"}


def test_a_misspelt_dask_setting_stops_the_hub(tmp_path):
    """DaskPresets passes through the chart as it is; the hub's check names the typo."""
    path = render_gateway_config(tmp_path, "-f", EXAMPLE_VALUES, "--set", "gateway.dask.presets.small.coress=2")
    with pytest.raises(ValueError, match="coress"):
        hub_config.check_policy(hub_config.load_site_config(path))


def test_the_oidc_client_secret_has_its_own_key(chart):
    (secret,) = [m for m in render(chart, *DEPENDENCY_OFF, "-f", EXAMPLE_VALUES) if m["kind"] == "Secret"]
    assert base64.b64decode(secret["data"]["oidc-client-secret"]).decode() == "change-me"
    (secret,) = [m for m in render(chart, *DEPENDENCY_OFF) if m["kind"] == "Secret"]
    assert set(secret["data"]) == {"gateway.yaml"}


def test_server_settings_reach_users_servers_as_traitlets_options(tmp_path):
    """The catalogue settings travel as KubernetesSpawner.args; a Jupyter server parses them
    back into exactly the values of the chart, and the server's own check finds no unknown key."""
    from science_gateway.jupyter_ext.app import GatewayExtension
    from science_gateway.jupyter_ext.catalog.base import CatalogBackend
    from science_gateway.jupyter_ext.catalog.rucio import RucioCatalog

    config = hub_config.load_site_config(render_gateway_config(tmp_path, "-f", EXAMPLE_VALUES))
    classes = [GatewayExtension, CatalogBackend, RucioCatalog]
    server = KVArgParseConfigLoader(list(config.KubernetesSpawner.args), classes=classes).load_config()
    settings = example_values()["gateway"]["catalog"]["settings"]
    assert server.GatewayExtension.catalog_class == "science_gateway.jupyter_ext.catalog.rucio.RucioCatalog"
    assert dict(server.RucioCatalog) == settings   # typed: rule_lifetime an int, allowed_scopes a list
    assert server.CatalogBackend.max_page_size == 200
    check_settings(server, classes, "server")


def test_network_policy_lets_servers_reach_only_the_listed_services(chart):
    (policy,) = [m for m in render(chart, *DEPENDENCY_OFF, "-f", EXAMPLE_VALUES) if m["kind"] == "NetworkPolicy"]
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": {"component": "singleuser-server"}}
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    # every rule names its peers: a rule without `to`/`from` would allow everything
    assert all(rule.get("to") for rule in spec["egress"]) and all(rule.get("from") for rule in spec["ingress"])
    peers = [peer for rule in spec["egress"] for peer in rule["to"]] + [peer for rule in spec["ingress"] for peer in rule["from"]]
    # nothing of each other: no peer selects users' server pods, no peer is an empty podSelector
    # (which would select every pod of the namespace)
    assert all(peer["podSelector"].get("matchLabels") for peer in peers if "podSelector" in peer)
    assert not [p for p in peers if p.get("podSelector", {}).get("matchLabels", {}).get("component") == "singleuser-server"]
    blocks = {(peer["ipBlock"]["cidr"], port["port"]) for rule in spec["egress"] for peer in rule["to"]
              if "ipBlock" in peer for port in rule["ports"]}
    wanted = {(cidr, port["port"]) for service in example_values()["networkPolicy"]["egress"]
              for cidr in service["cidrs"] for port in service["ports"]}
    assert blocks == wanted
    assert [peer["podSelector"]["matchLabels"] for rule in spec["ingress"] for peer in rule["from"]] == [
        {"hub.jupyter.org/network-access-singleuser": "true"}]


# --- install, upgrade, uninstall on the local API server --------------------------------------


class Api:
    """Just enough of the API server for these checks, as the admin kubeconfig's user."""

    def __init__(self, env):
        kubeconfig = yaml.safe_load(Path(env["KUBECONFIG_ADMIN"]).read_text())
        self.url = env["KUBE_API_URL"].rstrip("/")
        # per request: requests lets $REQUESTS_CA_BUNDLE override a Session's verify
        self.ca = env["KUBE_CA_FILE"]
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {kubeconfig['users'][0]['user']['token']}"

    def get(self, path):
        response = self.session.get(self.url + path, timeout=30, verify=self.ca)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    def delete(self, path):
        self.session.delete(self.url + path, timeout=30, verify=self.ca)


@pytest.fixture
def cluster():
    env = service_env("kubernetes")
    if "KUBECONFIG_ADMIN" not in env:
        missing("kubernetes", "kubernetes.env has no KUBECONFIG_ADMIN")
    api = Api(env)
    try:
        api.get("/version")
    except requests.RequestException as e:
        missing("kubernetes", f"the API server at {api.url} does not answer: {e}")
    return env, api


def test_install_upgrade_uninstall(chart, cluster, tmp_path):
    env, api = cluster
    namespace = f"sg-chart-{uuid.uuid4().hex[:8]}"
    kube = {"KUBECONFIG": env["KUBECONFIG_ADMIN"], "HELM_CACHE_HOME": str(tmp_path / "cache"),
            "HELM_CONFIG_HOME": str(tmp_path / "config"), "HELM_DATA_HOME": str(tmp_path / "data")}
    secret_path = f"/api/v1/namespaces/{namespace}/secrets/{HUB_CONFIG_SECRET}"
    policy_path = f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/science-gateway-singleuser"

    def installed_gateway_yaml():
        return yaml.safe_load(base64.b64decode(api.get(secret_path)["data"]["gateway.yaml"]))

    try:
        helm("install", "gateway", chart, "-n", namespace, "--create-namespace", "--wait",
             *DEPENDENCY_OFF, "-f", EXAMPLE_VALUES, env=kube)
        assert installed_gateway_yaml()["ResourcePolicy"]["groups"]["vo.teaching.example"]["partitions"]["cpu"]["max_cores"] == 1
        policy = api.get(policy_path)
        assert policy["spec"]["podSelector"]["matchLabels"] == {"component": "singleuser-server"}
        assert {"192.0.2.10/32"} <= {p["ipBlock"]["cidr"] for r in policy["spec"]["egress"] for p in r["to"] if "ipBlock" in p}

        changed = tmp_path / "changed.yaml"
        changed.write_text(yaml.safe_dump({
            "gateway": {"policy": {"groups": {"vo.teaching.example": {"partitions": {"cpu": {"max_cores": 2}}}}}},
            "networkPolicy": {"egress": [{"name": "rucio", "cidrs": ["203.0.113.5/32"], "ports": [{"port": 443}]}]},
        }))
        helm("upgrade", "gateway", chart, "-n", namespace, "--wait", *DEPENDENCY_OFF, "-f", EXAMPLE_VALUES,
             "-f", changed, env=kube)
        assert installed_gateway_yaml()["ResourcePolicy"]["groups"]["vo.teaching.example"]["partitions"]["cpu"]["max_cores"] == 2
        policy = api.get(policy_path)
        assert {p["ipBlock"]["cidr"] for r in policy["spec"]["egress"] for p in r["to"] if "ipBlock" in p} == {"203.0.113.5/32"}
        status = json.loads(helm("status", "gateway", "-n", namespace, "-o", "json", env=kube).stdout)
        assert (status["version"], status["info"]["status"]) == (2, "deployed")

        helm("uninstall", "gateway", "-n", namespace, "--wait", env=kube)
        assert api.get(secret_path) is None
        assert api.get(policy_path) is None
        # helm's own release records (Secrets of type helm.sh/release.v1) are gone too
        assert api.get(f"/api/v1/namespaces/{namespace}/secrets?labelSelector=owner%3Dhelm")["items"] == []
    finally:
        api.delete(f"/api/v1/namespaces/{namespace}")


def test_gateway_yaml_is_plain_traitlets_config(tmp_path):
    """Every top-level key is a class name and every section a mapping (what Config() takes)."""
    text = gateway_yaml(render(staged_chart(tmp_path), *DEPENDENCY_OFF, "-f", EXAMPLE_VALUES))
    data = yaml.safe_load(text)
    assert all(key[:1].isupper() and isinstance(section, dict) for key, section in data.items())
    assert isinstance(Config(data).KubernetesSpawner.node_pools, dict)
