"""The reference config: embedded default with nothing set, site files switch parts over."""

import pytest

from science_gateway.hub.config import CONFIG_ENV, STATE_DIR_ENV, build_config, load_site_config


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "state"))
    return {}


def test_nothing_set_is_the_embedded_default(env, tmp_path):
    c = build_config(env)
    assert c.JupyterHub.authenticator_class == "science-gateway-demo"
    assert c.JupyterHub.spawner_class == "science-gateway-local"
    assert c.JupyterHub.bind_url.startswith("http://127.0.0.1:")
    assert str(tmp_path / "state") in c.JupyterHub.db_url
    assert set(c.DemoAuthenticator.users) == {"demo", "admin"}
    # passwords are stored hashed, never in plain text
    assert all(u["password"].startswith("pbkdf2_sha256$") for u in c.DemoAuthenticator.users.values())
    assert (tmp_path / "state").stat().st_mode & 0o077 == 0


def test_yaml_site_config_switches_parts(env, tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text(
        "JupyterHub:\n  spawner_class: science-gateway-slurm\n"
        "GatewayExtension:\n  catalog_class: science_gateway.jupyter_ext.catalog.rucio.RucioCatalog\n"
    )
    c = build_config({**env, CONFIG_ENV: str(site)})
    assert c.JupyterHub.spawner_class == "science-gateway-slurm"
    assert c.JupyterHub.authenticator_class == "science-gateway-demo"  # untouched parts stay
    assert c.GatewayExtension.catalog_class.endswith("RucioCatalog")


def test_python_site_config_and_order(env, tmp_path):
    first = tmp_path / "first.yaml"
    first.write_text("Spawner:\n  default_url: /tree\n")
    second = tmp_path / "second.py"
    second.write_text("c.Spawner.default_url = '/lab/tree/examples'\n")
    c = build_config({**env, CONFIG_ENV: f"{first}:{second}"})
    assert c.Spawner.default_url == "/lab/tree/examples"


@pytest.mark.parametrize(
    "text, message",
    [("- a list\n", "ClassName"), ("spawner_class: x\n", "ClassName")],
    ids=["not-a-mapping", "lowercase-key"],
)
def test_malformed_site_config_says_what_shape_is_expected(tmp_path, text, message):
    site = tmp_path / "bad.yaml"
    site.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_site_config(site)


def test_missing_site_config_names_the_variable(tmp_path):
    with pytest.raises(FileNotFoundError, match=CONFIG_ENV):
        load_site_config(tmp_path / "nope.yaml")
