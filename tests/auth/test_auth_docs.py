"""docs/authentication.md's site configs are the example files, and those load and build."""

import re

import pytest
import yaml
from traitlets.config import Config

from science_gateway.hub.checkin import CheckinAuthenticator
from science_gateway.hub.cilogon import CILogonAuthenticator
from science_gateway.hub.config import SERVER_TOKEN_SCOPES, USER_ROLE, load_site_config
from sgtest.oidc import EXAMPLES, REPO

CLASSES = {"checkin": CheckinAuthenticator, "cilogon": CILogonAuthenticator}


def doc_blocks():
    text = (REPO / "docs" / "authentication.md").read_text()
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S)]


@pytest.mark.parametrize("style", sorted(CLASSES))
def test_docs_show_the_example_file(style):
    example = yaml.safe_load((EXAMPLES / f"{style}.yaml").read_text())
    assert example in doc_blocks()


@pytest.mark.parametrize("style", sorted(CLASSES))
def test_example_loads_as_a_site_config_and_builds_the_authenticator(style):
    config = load_site_config(EXAMPLES / f"{style}.yaml")
    assert config.JupyterHub.authenticator_class == f"science-gateway-{style}"
    roles = {r["name"]: r["scopes"] for r in config.JupyterHub.load_roles}
    # the token keeper reads the user's own access token from the gateway's route: the user must
    # hold the scope, and the gateway's server token asks for it (JupyterHub grants what the user
    # holds); nobody's server may read auth_state (the refresh token)
    assert roles["user"] == USER_ROLE["scopes"] and "server" not in roles
    assert "custom:gateway-token!user" in SERVER_TOKEN_SCOPES
    assert not [s for s in SERVER_TOKEN_SCOPES if "auth_state" in s]
    assert not [s for r in roles.values() for s in r if "auth_state" in s]
    cls = CLASSES[style]
    # endpoints given, so building it needs no network
    section = config[cls.__name__]
    section.update(authorize_url="https://x.invalid/a", token_url="https://x.invalid/t", userdata_url="https://x.invalid/u")
    authenticator = cls(config=Config({cls.__name__: section}))
    assert authenticator.manage_groups and authenticator.enable_auth_state
    assert authenticator.allowed_groups and authenticator.admin_groups
    assert authenticator.auth_refresh_age < authenticator.access_token_refresh_margin
