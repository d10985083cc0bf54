"""The demo login table: hashed passwords only, groups and admin flags from the table."""

import pytest
from traitlets import TraitError
from traitlets.config import Config

from science_gateway.hub.demo_auth import DemoAuthenticator
from science_gateway.hub.passwords import hash_password


@pytest.fixture
def auth():
    users = {
        "ada": {"password": hash_password("right"), "groups": ["astro"], "admin": False},
        "root-ish": {"password": hash_password("pw"), "groups": [], "admin": True},
    }
    return DemoAuthenticator(config=Config({"DemoAuthenticator": {"users": users}}))


async def test_right_password_gives_name_groups_and_admin(auth):
    assert await auth.authenticate(None, {"username": "ada", "password": "right"}) == {
        "name": "ada",
        "admin": False,
        "groups": ["astro"],
    }
    assert (await auth.authenticate(None, {"username": "root-ish", "password": "pw"}))["admin"] is True


@pytest.mark.parametrize(
    "data",
    [{"username": "ada", "password": "wrong"}, {"username": "nobody", "password": "right"}, {"username": "ada"}, {}],
    ids=["wrong-password", "unknown-user", "no-password", "empty"],
)
async def test_everything_else_is_refused(auth, data):
    assert await auth.authenticate(None, data) is None


def test_plain_text_passwords_are_refused():
    with pytest.raises(TraitError, match="science-gateway-hash-password"):
        DemoAuthenticator(users={"ada": {"password": "right"}})


def test_unknown_keys_are_refused():
    with pytest.raises(TraitError, match="unknown keys"):
        DemoAuthenticator(users={"ada": {"password": hash_password("x"), "group": ["typo"]}})
