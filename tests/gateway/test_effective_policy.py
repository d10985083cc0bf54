"""The admin's effective-policy report: the hub's own rules, for a user or a set of groups."""

import pytest
from traitlets.config import Config

from science_gateway import admin
from science_gateway.hub.config import embedded_default
from science_gateway.hub.effective import effective_policy

POLICY = {
    "astro": {"accounts": ["astro-2024"], "max_dask_workers": 4,
              "partitions": {"cpu": {"max_cores": 4, "max_memory_gb": 16, "max_walltime_hours": 24}}},
    "students": {"accounts": ["teaching"],
                 "partitions": {"debug": {"max_cores": 1, "max_memory_gb": 2, "max_walltime_hours": 1}}},
}


@pytest.fixture
def embedded(tmp_path):
    return embedded_default(tmp_path)


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


def test_notebook_api_outside_a_hub_asks_for_groups(monkeypatch):
    monkeypatch.delenv("JUPYTERHUB_API_URL", raising=False)
    with pytest.raises(admin.AdminError, match="pass groups"):
        admin.effective_policy("demo", environ={})
    report = admin.effective_policy("demo", groups=["astro"], environ={})
    assert report.groups == ("astro",)


def test_notebook_api_reads_site_config_files(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("DaskPresets:\n  presets:\n    tiny: {cores: 1, memory_gb: 1, max_workers: 2}\n")
    report = admin.effective_policy("demo", groups=["astro"], config_files=[site], environ={})
    assert list(report.dask_presets) == ["tiny"]
