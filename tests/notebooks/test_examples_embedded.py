"""Every example notebook runs unchanged against the embedded default (a real hub and server)."""

import pytest

from sgtest.notebooks import EXAMPLES, api_token, execute, outputs_text

pytestmark = pytest.mark.hub

NOTEBOOKS = sorted(p.name for p in EXAMPLES.glob("*.ipynb"))


@pytest.fixture(scope="module")
def demo_api(embedded_hub):
    from sgtest.hub import HubSession

    session = HubSession(embedded_hub)
    assert session.login("demo", "demo").status_code == 200
    session.start_server("demo")
    return {
        "SCIENCE_GATEWAY_API_URL": f"{embedded_hub.url}/user/demo/",
        "SCIENCE_GATEWAY_API_TOKEN": api_token(session, "demo"),
    }


def test_there_are_examples_for_each_kind_of_user():
    assert len(NOTEBOOKS) >= 2, NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_example_runs(name, demo_api, tmp_path):
    nb = execute(EXAMPLES / name, demo_api, cwd=tmp_path)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    assert "Traceback" not in outputs_text(nb)
