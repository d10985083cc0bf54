"""Every example notebook runs unchanged against the embedded default (a real hub and server)."""

import pytest

from sgtest.notebooks import EXAMPLES, api_token, execute, outputs_text

pytestmark = pytest.mark.hub

NOTEBOOKS = sorted(p.name for p in EXAMPLES.glob("*.ipynb"))
#: who runs each notebook (default: the demo astronomer)
RUN_AS = {"03-admin-effective-policy.ipynb": "admin"}


@pytest.fixture(scope="module")
def user_env(embedded_hub):
    """The environment a notebook of that user's server would have (the hub API for the admin's)."""
    from sgtest.hub import HubSession

    from science_gateway.hub.config import DEMO_USERS

    envs = {}

    def env_for(username):
        if username not in envs:
            session = HubSession(embedded_hub)
            assert session.login(username, DEMO_USERS[username][0]).status_code == 200
            session.start_server(username)
            envs[username] = {
                "SCIENCE_GATEWAY_API_URL": f"{embedded_hub.url}/user/{username}/",
                "SCIENCE_GATEWAY_API_TOKEN": api_token(session, username),
            }
            if DEMO_USERS[username][2]:
                # what the hub adds to an admin's server token (Spawner.server_token_scopes)
                envs[username]["JUPYTERHUB_API_URL"] = f"{embedded_hub.url}/hub/api"
                envs[username]["JUPYTERHUB_API_TOKEN"] = api_token(
                    session, username, scopes=["read:users:name", "read:users:groups"]
                )
        return envs[username]

    return env_for


def test_there_are_examples_for_each_kind_of_user():
    assert {"01-astronomer-walkthrough.ipynb", "02-pipeline-developer.ipynb", "03-admin-effective-policy.ipynb"} <= set(
        NOTEBOOKS
    )


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_example_runs(name, user_env, tmp_path):
    nb = execute(EXAMPLES / name, user_env(RUN_AS.get(name, "demo")), cwd=tmp_path)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    text = outputs_text(nb)
    assert "Traceback" not in text
    if name.startswith("03-admin"):
        # demo's groups came from the hub; the embedded default's presets and rules apply
        assert "**groups:** astro" in text and "**may log in:** yes" in text and "| small |" in text
        assert "newcomer" in text and "is not in DemoAuthenticator.users" in text
