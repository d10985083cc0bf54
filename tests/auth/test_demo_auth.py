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


async def test_password_checks_do_not_block_the_event_loop(auth):
    """Before: PBKDF2 ran on the hub's loop (40 wrong passwords took the hub API from 6 ms to 2.6 s).
    A coroutine counts how often it runs while 10 checks are under way."""
    import asyncio

    ticks, done = 0, False

    async def ticker():
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.ensure_future(ticker())
    checks = [auth.authenticate(None, {"username": "ada", "password": f"wrong-{i}"}) for i in range(10)]
    results = await asyncio.gather(*checks)
    done = True
    await task
    assert results == [None] * 10
    # blocking checks run back to back and let the ticker in at most a few times
    assert ticks > 50, ticks


def test_verify_workers_is_a_setting():
    assert DemoAuthenticator(verify_workers=3)._verifier._max_workers == 3
