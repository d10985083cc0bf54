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
    # one login by default: a second one shares the unix user (and its files), so only when asked
    assert set(c.DemoAuthenticator.users) == {"admin"}
    assert set(build_config({"SCIENCE_GATEWAY_DEMO_SECOND_USER": "1"}).DemoAuthenticator.users) == {"demo", "admin"}
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


def test_an_existing_state_dir_and_the_hubs_secrets_are_made_private(env, tmp_path):
    """Before: mkdir's mode was ignored for an existing dir, and SQLite made the database 0644."""
    import os
    import stat

    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    secret = state / "jupyterhub_cookie_secret"
    secret.write_text("00" * 32)
    os.chmod(secret, 0o644)
    c = build_config(env)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    db = state / "jupyterhub.sqlite"
    assert c.JupyterHub.db_url == f"sqlite:///{db}"
    assert db.exists() and stat.S_IMODE(db.stat().st_mode) == 0o600


def test_the_hub_database_keeps_a_write_ahead_log(env, tmp_path):
    """One sync per commit instead of several: the hub's event loop waits less on the disk."""
    import sqlite3
    from contextlib import closing

    build_config(env)
    db = tmp_path / "state" / "jupyterhub.sqlite"
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    build_config(env)  # again, on the existing database: unchanged
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


BAD_SITE = {
    "policy-key": ("ResourcePolicy:\n  groups:\n    astro:\n      partitions:\n        cpu: {max_corez: 4}\n", "max_corez"),
    "policy-group-key": ("ResourcePolicy:\n  groups:\n    astro: {acounts: [a]}\n", "acounts"),
    "preset-key": ("DaskPresets:\n  presets:\n    small: {cores: 1, memory_gb: 2, max_wrkers: 4}\n", "max_wrkers"),
    # a misspelt setting itself: traitlets would only warn and leave the policy empty
    "policy-setting": ("ResourcePolicy:\n  grups: {astro: {}}\n", r"ResourcePolicy\.grups \(did you mean groups\?\)"),
    "presets-setting": ("DaskPresets:\n  job_nmae: x\n", r"DaskPresets\.job_nmae"),
}


@pytest.mark.parametrize(("text", "key"), BAD_SITE.values(), ids=BAD_SITE.keys())
def test_a_typo_in_the_policy_or_presets_fails_building_the_config(env, tmp_path, text, key):
    site = tmp_path / "site.yaml"
    site.write_text(text)
    with pytest.raises(ValueError, match=key):
        build_config({CONFIG_ENV: str(site)})


def test_the_login_page_says_users_share_one_unix_user_only_on_the_local_spawner(env, tmp_path):
    from science_gateway.hub.config import ONE_UNIX_USER_NOTICE

    assert build_config(env).JupyterHub.template_vars["announcement_login"] == ONE_UNIX_USER_NOTICE
    site = tmp_path / "site.yaml"
    site.write_text("JupyterHub:\n  spawner_class: science-gateway-slurm\n")
    assert "announcement_login" not in build_config({CONFIG_ENV: str(site)}).JupyterHub.get("template_vars", {})


@pytest.mark.hub
def test_jupyterhub_with_a_typo_in_the_policy_exits_naming_the_key(tmp_path):
    """The real ``jupyterhub`` process: it stops at start-up, not at the first spawn."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from sgtest.hub import REFERENCE_CONFIG

    site = tmp_path / "site.yaml"
    site.write_text(BAD_SITE["policy-key"][0])
    env = {**os.environ, STATE_DIR_ENV: str(tmp_path / "state"), CONFIG_ENV: str(site)}
    proc = subprocess.run([str(Path(sys.executable).parent / "jupyterhub"), "-f", str(REFERENCE_CONFIG)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "max_corez" in proc.stderr and "ResourcePolicy" in proc.stderr


def test_the_declared_jupyterhub_range_is_the_one_the_code_needs():
    """SpawnException with status_code (spawners) and filtered custom scopes (hub/api.py) are
    JupyterHub 6: a 5.x the old range allowed fails at import."""
    import tomllib
    from pathlib import Path

    from jupyterhub.spawner import SpawnException
    from packaging.requirements import Requirement

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    (req,) = [Requirement(r) for r in pyproject["project"]["dependencies"] if Requirement(r).name == "jupyterhub"]
    assert not req.specifier.contains("5.4.0") and req.specifier.contains("6.1.1")
    assert SpawnException("x", reason="r", status_code=409).status_code == 409
