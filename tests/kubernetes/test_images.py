"""The image recipes (images/*/Dockerfile) install what the chart's configuration needs.

No image can be built here (no container runtime): these read the recipes, the way the chart
and the packaging refer to them, so a renamed extra, file or image fails here.
"""

import re
import tomllib

import pytest
import yaml
from sgtest.chart import CHART, EXAMPLE_VALUES, REPO
from traitlets.config import Config

from science_gateway.hub import config as hub_config

IMAGES = REPO / "images"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
EXTRAS = PYPROJECT["project"]["optional-dependencies"]
APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
CONFIG_D = "/usr/local/etc/jupyterhub/jupyterhub_config.d/"


def instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = (IMAGES / name / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(parts[0].upper(), parts[1] if len(parts) > 1 else "")
            for parts in (line.strip().split(None, 1) for line in joined.splitlines() if line.strip())]


def args(name: str) -> dict[str, str]:
    return dict(value.split("=", 1) for op, value in instructions(name) if op == "ARG" and "=" in value)


def installed_extras(name: str) -> set[str]:
    """The extras the recipe's pip install of the gateway wheel asks for (ARG defaults resolved)."""
    defaults = args(name)
    (run,) = [value for op, value in instructions(name) if op == "RUN" and "pip install" in value]
    match = re.search(r"science_gateway-\$\{SCIENCE_GATEWAY_VERSION\}-py3-none-any\.whl\[([^\]]+)\]", run)
    assert match, run
    extras = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], match.group(1))
    return set(extras.split(","))


def extra_providing(requirement: str) -> str:
    (name,) = [extra for extra, reqs in EXTRAS.items() if any(r.startswith(requirement) for r in reqs)]
    return name


@pytest.mark.parametrize("name", ["hub", "singleuser"])
def test_recipe_installs_the_wheel_of_the_app_version_and_ends_unprivileged(name):
    assert args(name)["SCIENCE_GATEWAY_VERSION"] == APP_VERSION == PYPROJECT["project"]["version"]
    users = [value for op, value in instructions(name) if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert installed_extras(name) <= set(EXTRAS)


def test_hub_image_is_z2jh_with_the_spawner_and_login_extras():
    (base,) = [value for op, value in instructions("hub") if op == "FROM"]
    assert base == "quay.io/jupyterhub/k8s-hub:${Z2JH_VERSION}"
    assert args("hub")["Z2JH_VERSION"].startswith("4.")
    extras = installed_extras("hub")
    # JupyterHub.spawner_class: science-gateway-kubernetes needs KubeSpawner; the OIDC logins oauthenticator
    assert extra_providing("jupyterhub-kubespawner") in extras
    assert extra_providing("oauthenticator") in extras


def test_hub_image_loads_the_gateway_config_through_config_d():
    (copy,) = [value for op, value in instructions("hub") if op == "COPY" and CONFIG_D in value]
    source, target = copy.split()
    assert target.startswith(CONFIG_D) and target.endswith(".py")   # z2jh runs config.d/*.py
    assert (REPO / source).is_file()
    assert "merge_hub_config(c, kubernetes_config())" in (REPO / source).read_text()


def test_config_d_file_merges_the_rendered_gateway_yaml(tmp_path, monkeypatch):
    """Run the hub image's config.d file the way z2jh does (exec with its `c`)."""
    if not hasattr(hub_config, "kubernetes_config"):
        pytest.skip("science_gateway.hub.config.kubernetes_config is not on this branch yet (the spawner's)")
    from sgtest.chart import render_gateway_config

    monkeypatch.setenv(hub_config.CONFIG_ENV, str(render_gateway_config(tmp_path, "-f", EXAMPLE_VALUES)))
    source = REPO / "images/hub/jupyterhub_config.d/science_gateway.py"
    c = Config()
    c.KubeSpawner.image = "set-by-z2jh"
    c.JupyterHub.load_roles = [{"name": "jupyterhub-idle-culler", "scopes": ["list:users"], "services": ["jupyterhub-idle-culler"]}]
    exec(compile(source.read_text(), source.name, "exec"), {"c": c})
    assert c.JupyterHub.spawner_class == "science-gateway-kubernetes"
    assert c.KubeSpawner.image == "set-by-z2jh"   # what z2jh set before stays
    assert {"jupyterhub-idle-culler", "user"} <= {role["name"] for role in c.JupyterHub.load_roles}
    assert "vo.astro.example" in c.ResourcePolicy.groups


def test_singleuser_image_has_what_users_servers_run():
    (base,) = [value for op, value in instructions("singleuser") if op == "FROM"]
    assert base == "${BASE_IMAGE}" and args("singleuser")["BASE_IMAGE"].startswith("quay.io/jupyter/")
    extras = installed_extras("singleuser")
    # the example values' catalogue is Rucio (rucio-clients), the widgets ipywidgets
    example = yaml.safe_load(EXAMPLE_VALUES.read_text())
    assert example["gateway"]["catalog"]["class"].endswith(".rucio.RucioCatalog")
    assert {extra_providing("rucio-clients"), extra_providing("ipywidgets"), "examples"} <= extras
    assert not {"slurm", "kubernetes", "oauth"} & extras   # hub-side only
