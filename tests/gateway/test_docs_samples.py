"""Every YAML sample in the docs is a site config the hub would load, naming only settings that exist.

Each ```yaml block of README.md and docs/*.md and each docs/examples/*.yaml is loaded the way the
hub loads ``$SCIENCE_GATEWAY_CONFIG`` (``load_site_config``); every section must be a class the hub
configures (JupyterHub's own, the installed authenticators/spawners/proxies, ours) and every key a
config trait of it: a misspelt or removed setting fails here instead of being ignored by the hub.
The pure classes' sections (policy, Dask presets, notebook pipelines) are built too, so their nested dicts are checked.
A ```python block made of ``c.Class.trait = ...`` lines (a .py site config or a
jupyter_server_config.py) is run and checked the same way against the hub's and the servers' classes.
A block that is not a hub site config says so on the line before it: ``<!-- not a site config -->``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from traitlets.config import Config

from science_gateway.core.batch import NotebookJobs
from science_gateway.core.policy import ResourcePolicy
from science_gateway.core.presets import DaskPresets
from science_gateway.hub.config import load_site_config
from science_gateway.hub.confighelp import runs_in_server, shipped_classes

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
EXAMPLES = sorted((REPO / "docs" / "examples").glob("*.yaml"))
NOT_A_SITE_CONFIG = "<!-- not a site config -->"
BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.S | re.M)
#: pure configurables whose validators build typed objects from the nested dicts an admin writes
BUILT = (ResourcePolicy, DaskPresets, NotebookJobs)


def doc_samples():
    for path in DOCS:
        text = path.read_text()
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            before = text[: match.start()].rstrip().rpartition("\n")[2]
            if before.strip() != NOT_A_SITE_CONFIG:
                yield pytest.param(match.group(1), id=f"{path.name}:{line}")
    for path in EXAMPLES:
        yield pytest.param(path.read_text(), id=f"examples/{path.name}")


SAMPLES = list(doc_samples())


def hub_classes() -> dict[str, list[type]]:
    """Class name -> the classes a hub site config section of that name configures."""
    from jupyterhub.app import JupyterHub

    ours = [cls for cls in shipped_classes().values() if not runs_in_server(cls)]
    by_name: dict[str, list[type]] = {}
    for cls in [JupyterHub, *JupyterHub().classes, *ours]:
        for klass in cls.__mro__:
            if hasattr(klass, "class_traits") and klass not in by_name.setdefault(klass.__name__, []):
                by_name[klass.__name__].append(klass)
    return by_name


HUB_CLASSES = hub_classes()


def server_class_names() -> set[str]:
    return {cls.__name__ for cls in shipped_classes().values() if runs_in_server(cls)}


def unknown_settings(config: Config, classes: dict[str, list[type]], no_class: str, skip=()) -> list[str]:
    """What ``config`` names that ``classes`` (name -> classes) do not have, as sentences."""
    problems = []
    for section, traits in config.items():
        if section in skip:
            continue
        if section not in classes:
            problems.append(f"{section} is {no_class}")
            continue
        known = set().union(*(cls.class_traits(config=True) for cls in classes[section]))
        problems += [f"{section}.{name} is no setting" for name in traits if name not in known]
    return problems


def load(text: str, tmp_path: Path) -> Config:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return load_site_config(path)


def test_the_docs_have_samples():
    ids = {p.id for p in SAMPLES}
    assert {"examples/checkin.yaml", "examples/cilogon.yaml"} <= ids
    assert any(i.startswith("slurm.md:") for i in ids) and any(i.startswith("dask.md:") for i in ids)


@pytest.mark.parametrize("text", SAMPLES)
def test_sample_names_only_settings_the_hub_has(text, tmp_path):
    config = load(text, tmp_path)
    assert config, "an empty sample"
    server_side = [section for section in config if section in server_class_names() and section not in HUB_CLASSES]
    problems = [f"{section} is read by users' Jupyter servers, not the hub: show it as a "
                "jupyter_server_config sample (see docs/configuration.md)" for section in server_side]
    problems += unknown_settings(config, HUB_CLASSES, "no class the hub configures", skip=server_side)
    assert not problems, problems


@pytest.mark.parametrize("text", SAMPLES)
def test_sample_builds(text, tmp_path):
    """The hub app takes the sample (entry-point names resolve) and the pure sections build."""
    from jupyterhub.app import JupyterHub

    config = load(text, tmp_path)
    hub = JupyterHub(config=config)
    for name in ("authenticator_class", "spawner_class"):
        if name in config.JupyterHub:
            assert isinstance(getattr(hub, name), type), f"JupyterHub.{name} does not resolve"
    for cls in BUILT:
        if cls.__name__ in config:
            cls(config=config)  # unknown keys and bad values raise, saying what is allowed


PY_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_config_samples():
    for path in DOCS:
        text = path.read_text()
        for match in PY_BLOCK.finditer(text):
            code = match.group(1)
            lines = [ln for ln in code.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
            if lines and all(ln.startswith("c.") for ln in lines):
                yield pytest.param(code, id=f"{path.name}:{text.count(chr(10), 0, match.start()) + 1}")


PY_SAMPLES = list(python_config_samples())


def all_classes() -> dict[str, list[type]]:
    """HUB_CLASSES plus what users' Jupyter servers configure (ServerApp's classes, our extension's)."""
    from jupyter_server.serverapp import ServerApp

    by_name = {name: list(classes) for name, classes in HUB_CLASSES.items()}
    server = [cls for cls in shipped_classes().values() if runs_in_server(cls)]
    for cls in [ServerApp, *ServerApp().classes, *server]:
        for klass in cls.__mro__:
            if hasattr(klass, "class_traits") and klass not in by_name.setdefault(klass.__name__, []):
                by_name[klass.__name__].append(klass)
    return by_name


def test_the_docs_have_python_config_samples():
    assert any(p.id.startswith("catalog.md:") for p in PY_SAMPLES), [p.id for p in PY_SAMPLES]


@pytest.mark.parametrize("code", PY_SAMPLES)
def test_python_config_sample_names_only_settings_that_exist(code):
    config = Config()
    exec(compile(code, "<docs sample>", "exec"), {"c": config})
    problems = unknown_settings(config, all_classes(), "no class we or JupyterHub/Jupyter Server configure")
    assert not problems, problems


def test_a_misspelt_setting_fails(tmp_path):
    """The check can fail: a typo in a trait name, a nested key, a server-side section."""
    with pytest.raises(AssertionError, match=r"SlurmSpawner.python_prefx is no setting"):
        test_sample_names_only_settings_the_hub_has("SlurmSpawner:\n  python_prefx: /opt\n", tmp_path)
    with pytest.raises(AssertionError, match="read by users' Jupyter servers"):
        test_sample_names_only_settings_the_hub_has("GatewayExtension:\n  catalog_class: x\n", tmp_path)
    with pytest.raises(AssertionError, match=r"RucioCatalog.rse_name is no setting"):
        test_python_config_sample_names_only_settings_that_exist('c.RucioCatalog.rse_name = "X"\n')
    with pytest.raises(Exception, match="max_cpus"):
        test_sample_builds(
            "ResourcePolicy:\n  groups:\n    astro:\n      partitions: {cpu: {max_cpus: 4}}\n", tmp_path
        )
