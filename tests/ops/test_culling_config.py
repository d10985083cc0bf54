"""The idle culler's service and role, built from IdleCulling settings (pure), and the hub's
reference config carrying them."""

import pytest
from traitlets.config import Config

from science_gateway.hub.config import USER_ROLE, build_config, check_policy
from science_gateway.hub.culling import CULLER_SCOPES, SERVICE_NAME, culler_config


def test_the_service_runs_the_culler_with_the_settings():
    config = Config({"IdleCulling": {"timeout": 600, "every": 60, "max_age": 86400}})
    c = culler_config(config, python="/venv/bin/python")
    [service] = c.JupyterHub.services
    assert service == {"name": SERVICE_NAME, "command": [
        "/venv/bin/python", "-m", "jupyterhub_idle_culler", "--timeout=600", "--cull-every=60", "--concurrency=10",
        "--max-age=86400"]}
    [role] = c.JupyterHub.load_roles
    assert role == {"name": SERVICE_NAME, "scopes": CULLER_SCOPES, "services": [SERVICE_NAME]}
    assert "admin:users" not in role["scopes"]


def test_other_services_and_roles_stay():
    mine = {"name": "mine", "url": "http://127.0.0.1:9999"}
    config = Config({"JupyterHub": {"services": [mine], "load_roles": [USER_ROLE]}})
    c = culler_config(config)
    assert c.JupyterHub.services[0] == mine and c.JupyterHub.load_roles[0] == USER_ROLE
    assert [s["name"] for s in c.JupyterHub.services] == ["mine", SERVICE_NAME]


def test_off_adds_nothing():
    assert culler_config(Config({"IdleCulling": {"enabled": False}})) == Config()


def test_a_misspelt_setting_stops_the_hub():
    with pytest.raises(ValueError, match="IdleCulling.timout"):
        check_policy(Config({"IdleCulling": {"timout": 10}}))


def test_the_reference_config_runs_the_culler(tmp_path, monkeypatch):
    monkeypatch.setenv("SCIENCE_GATEWAY_STATE_DIR", str(tmp_path))
    c = build_config({"SCIENCE_GATEWAY_STATE_DIR": str(tmp_path)})
    assert [s["name"] for s in c.JupyterHub.services] == [SERVICE_NAME]
    assert {r["name"] for r in c.JupyterHub.load_roles} == {"user", SERVICE_NAME}
    assert "--timeout=3600" in c.JupyterHub.services[0]["command"]
