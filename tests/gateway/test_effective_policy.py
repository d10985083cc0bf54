"""The admin's effective-policy report: the hub's own rules, for a user or a set of groups.

The builder with the hub's objects made from a config (as the hub makes them), then the route on
a real embedded hub and the notebook client of it.
"""

import pytest
import requests
from traitlets.config import Config

from science_gateway import admin
from science_gateway.core.effective import EffectivePolicy
from science_gateway.hub.config import DEMO_USERS, embedded_default
from science_gateway.hub.effective import effective_policy as _effective_policy
from sgtest.hub import HubSession
from sgtest.notebooks import api_token


def resolve_class(value, group):
    from importlib.metadata import entry_points

    (ep,) = [ep for ep in entry_points(group=group) if ep.name == value]
    return ep.load()


def effective_policy(config, username, groups, admin=None):
    """The report as the hub makes it, with the authenticator and spawner class ``config`` names."""
    import asyncio

    auth_class = resolve_class(config.JupyterHub.authenticator_class, "jupyterhub.authenticators")
    spawner_class = resolve_class(config.JupyterHub.spawner_class, "jupyterhub.spawners")
    return asyncio.run(_effective_policy(auth_class(config=config), spawner_class, config, username, groups, admin=admin))

POLICY = {
    "astro": {"accounts": ["astro-2024"], "max_dask_workers": 4,
              "partitions": {"cpu": {"max_cores": 4, "max_memory_gb": 16, "max_walltime_hours": 24}}},
    "students": {"accounts": ["teaching"],
                 "partitions": {"debug": {"max_cores": 1, "max_memory_gb": 2, "max_walltime_hours": 1}}},
}


@pytest.fixture
def embedded(tmp_path):
    return embedded_default(tmp_path, second_user=True)


def test_embedded_default_demo_user(embedded):
    report = effective_policy(embedded, "demo", ["astro"])
    assert report.may_log_in and report.login_reason == "every authenticated user is allowed"
    assert not report.admin and report.spawner.startswith("LocalSpawner")
    assert not report.uses_resource_policy and report.partitions == {}
    assert report.dask_backend == "local" and set(report.dask_presets) == {"small", "medium"}
    text = report._repr_markdown_()
    assert "**groups:** astro" in text and "| small |" in text


def test_embedded_default_admin_and_unknown_user(embedded):
    assert effective_policy(embedded, "admin", ["astro", "gateway-admins"]).admin is False  # the hub's flag decides
    assert effective_policy(embedded, "admin", [], admin=True).admin is True
    stranger = effective_policy(embedded, "mallory", ["astro"])
    assert not stranger.may_log_in and "not in DemoAuthenticator.users" in stranger.login_reason


def slurm_checkin_config():
    pytest.importorskip("batchspawner")
    pytest.importorskip("oauthenticator")
    c = Config()
    c.JupyterHub.authenticator_class = "science-gateway-checkin"
    c.JupyterHub.spawner_class = "science-gateway-slurm"
    c.CheckinAuthenticator.allowed_groups = {"astro", "students"}
    c.CheckinAuthenticator.admin_groups = {"gateway-admins"}
    c.CheckinAuthenticator.oidc_issuer = "http://127.0.0.1:9/never-fetched"
    c.ResourcePolicy.groups = POLICY
    c.DaskPresets.presets = {
        "small": {"partition": "cpu", "cores": 1, "memory_gb": 2, "max_workers": 8},
        "teaching": {"partition": "debug", "cores": 1, "memory_gb": 1, "max_workers": 2},
    }
    return c


def test_production_rules_come_from_the_configured_authenticator_and_policy():
    c = slurm_checkin_config()
    astro = effective_policy(c, "alice", ["astro"])
    assert astro.may_log_in and astro.login_reason == "member of astro"
    assert astro.uses_resource_policy and list(astro.partitions) == ["cpu"]
    assert astro.partitions["cpu"]["max_cores"] == 4 and astro.accounts == ("astro-2024",)
    assert astro.default_request["partition"] == "cpu" and astro.default_request["account"] == "astro-2024"
    # Dask: the policy's max_dask_workers caps the preset; presets on other partitions are not offered
    assert astro.dask_backend == "slurm" and astro.dask_max_workers == 4
    assert list(astro.dask_presets) == ["small"] and astro.dask_presets["small"]["max_workers"] == 4

    student = effective_policy(c, "sam", ["students"])
    assert list(student.partitions) == ["debug"] and student.dask_max_workers == 0 and student.dask_presets == {}

    outsider = effective_policy(c, "eve", ["physics"])
    assert not outsider.may_log_in and "Membership needed" in outsider.login_reason
    assert outsider.partitions == {} and "cannot start a server" in outsider._repr_markdown_()
    assert effective_policy(c, "root", ["gateway-admins"]).admin


def test_report_round_trips_as_json():
    import json

    report = effective_policy(slurm_checkin_config(), "alice", ["astro"])
    again = EffectivePolicy.from_dict(json.loads(json.dumps(report.as_dict())))
    assert again == report
    with pytest.raises(ValueError, match="unknown keys"):
        EffectivePolicy.from_dict({**report.as_dict(), "extra": 1})


def test_notebook_api_outside_a_hub_says_to_use_an_admins_server():
    with pytest.raises(admin.AdminError, match="admin's server"):
        admin.effective_policy("demo", groups=["astro"], environ={})


# --- the hub's route, on the embedded default ----------------------------------------------------


@pytest.fixture(scope="module")
def tokens(embedded_hub):
    out = {}
    for name in ("admin", "demo"):
        session = HubSession(embedded_hub)
        assert session.login(name, DEMO_USERS[name][0]).status_code == 200
        # the admin: what an admin's server token may do (Spawner.server_token_scopes); demo: all of
        # demo's own rights, which are not enough
        scopes = ["read:users:name", "read:users:groups"] if name == "admin" else None
        out[name] = api_token(session, name, scopes=scopes)
    return out


def _env(hub, token):
    return {"JUPYTERHUB_API_URL": f"{hub.url}/hub/api", "JUPYTERHUB_API_TOKEN": token}


@pytest.mark.hub
def test_route_gives_an_admin_the_hubs_report(embedded_hub, tokens):
    report = admin.effective_policy("demo", environ=_env(embedded_hub, tokens["admin"]))
    assert report.groups == ("astro",) and report.may_log_in and report.admin is False
    assert report.spawner.startswith("LocalSpawner") and set(report.dask_presets) == {"small", "medium"}
    newcomer = admin.effective_policy("newcomer", groups=["students"], environ=_env(embedded_hub, tokens["admin"]))
    assert newcomer.groups == ("students",) and not newcomer.may_log_in
    assert "not in DemoAuthenticator.users" in newcomer.login_reason


@pytest.mark.hub
def test_route_refuses_non_admins_and_no_token(embedded_hub, tokens):
    url = f"{embedded_hub.url}/hub/api/gateway/effective-policy/admin"
    r = requests.get(url, headers={"Authorization": f"token {tokens['demo']}"}, timeout=30)
    assert r.status_code == 403 and "for gateway admins" in r.json()["message"]
    with pytest.raises(admin.AdminError, match="403.*for gateway admins"):
        admin.effective_policy("admin", groups=["astro"], environ=_env(embedded_hub, tokens["demo"]))
    assert requests.get(url, timeout=30).status_code == 403


@pytest.mark.hub
def test_route_says_when_the_user_is_unknown_and_quotes_only_a_prefix(embedded_hub, tokens):
    with pytest.raises(admin.AdminError, match="404.*no user 'nobody'.*groups="):
        admin.effective_policy("nobody", environ=_env(embedded_hub, tokens["admin"]))
    long_group = "g" * 5000
    r = requests.get(f"{embedded_hub.url}/hub/api/gateway/effective-policy/demo", params={"groups": long_group},
                     headers={"Authorization": f"token {tokens['admin']}"}, timeout=30)
    assert r.status_code == 400 and len(r.json()["message"]) < 200
