import asyncio
import os

import pytest

from sgtest.hub import OTHER_USER, HubSession, RunningHub
from sgtest.isolation import check_globals_restored, process_globals
from sgtest.server import server_config

# jp_fetch and friends for the server-extension tests (a real Jupyter Server per test).
pytest_plugins = ["pytest_jupyter.jupyter_server"]

ARTIFACTS = os.environ.get("SG_TEST_ARTIFACTS", os.path.join(os.path.dirname(__file__), "..", "test-artifacts"))


@pytest.fixture
def artifacts_dir():
    """Where tests save what a person should look at (screenshots); kept after the run."""
    os.makedirs(ARTIFACTS, exist_ok=True)
    return os.path.abspath(ARTIFACTS)


@pytest.fixture(scope="module")
def embedded_hub(tmp_path_factory):
    """The embedded default, as the README's first command starts it, on free ports."""
    from science_gateway.hub.config import DEMO_USERS
    from science_gateway.hub.passwords import hash_password

    users = {
        name: {"password": hash_password(password), "groups": groups, "admin": admin}
        for name, (password, groups, admin) in {**DEMO_USERS, OTHER_USER[0]: (OTHER_USER[1], [], False)}.items()
    }
    with RunningHub(tmp_path_factory.mktemp("hub"), config={"DemoAuthenticator": {"users": users}}) as hub:
        yield hub


@pytest.fixture
def demo_session(embedded_hub):
    session = HubSession(embedded_hub)
    r = session.login("demo", "demo")
    assert r.status_code == 200, r.text[:500]
    return session


@pytest.fixture
def gateway_config():
    """A module's own settings for the server-extension tests' Jupyter Server: override this
    fixture in the module (sections of traits, merged into jp_server_config)."""
    return {}


@pytest.fixture
def jp_server_config(gateway_config):
    """pytest_jupyter's server config: the gateway extension, token auth on, plus gateway_config."""
    return server_config(gateway_config)


@pytest.fixture
async def jp_asyncio_loop():
    """Run pytest_jupyter's server on pytest-asyncio's loop (asyncio_mode=auto runs the tests there)."""
    return asyncio.get_running_loop()


@pytest.fixture(autouse=True, scope="module")
def _module_restores_globals(request):
    """Module-scoped fixtures (set up after this one, torn down before it) restore what they change."""
    before = process_globals()
    yield
    check_globals_restored(before, f"the module-scoped fixtures of {request.node.nodeid}")


@pytest.fixture(autouse=True)
def _test_restores_globals(request):
    """Each test and its function-scoped fixtures restore what they change (monkeypatch does)."""
    before = process_globals()
    yield
    check_globals_restored(before, request.node.nodeid)
