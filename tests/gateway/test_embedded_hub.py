"""The embedded default through a real JupyterHub: login form, spawn, the server and our API."""

import pytest
import requests

pytestmark = pytest.mark.hub


def test_wrong_password_is_refused(embedded_hub):
    from sgtest.hub import HubSession

    session = HubSession(embedded_hub)
    r = session.login("demo", "not-the-password")
    assert r.status_code == 403
    assert "Invalid username or password" in r.text
    assert session.get("/hub/api/user").status_code == 403


def test_demo_user_spawns_and_reaches_gateway_api(demo_session):
    demo_session.start_server("demo")
    assert demo_session.identity("demo") == "demo"

    root = demo_session.get("/user/demo/gateway/api/")
    assert root.status_code == 200
    body = root.json()
    assert body["name"] == "science-gateway"
    assert body["catalog"]["type"] == "DemoCatalog"

    found = demo_session.get("/user/demo/gateway/api/datasets", params={"filters": "project=run2024,datatype=RAW"})
    assert found.status_code == 200
    assert [d["did"] for d in found.json()["datasets"]] == ["demo:run2024.raw.0001", "demo:run2024.raw.0002"]


def test_demo_user_groups_come_from_the_login_table(demo_session):
    me = demo_session.get("/hub/api/user").json()
    assert me["name"] == "demo"
    assert me["admin"] is False
    assert me["groups"] == ["astro"]


def test_one_user_cannot_use_another_users_server(embedded_hub, demo_session):
    from sgtest.hub import OTHER_USER, HubSession

    demo_session.start_server("demo")
    other = HubSession(embedded_hub)
    assert other.login(*OTHER_USER).status_code == 200
    for path in ("/user/demo/api/status", "/user/demo/gateway/api/datasets", "/user/demo/lab"):
        r = other.get(path)
        assert r.status_code == 403, (path, r.status_code, r.url)


def _server_token(session, username: str) -> str:
    """The JUPYTERHUB_API_TOKEN the hub gave ``username``'s running server (read from its process)."""
    from science_gateway.hub.config import DEMO_USERS
    from sgtest.hub import HubSession

    admin = HubSession(session.hub)
    assert admin.login("admin", DEMO_USERS["admin"][0]).status_code == 200
    state = admin.get(f"/hub/api/users/{username}").json()["servers"][""]["state"]
    with open(f"/proc/{state['pid']}/environ", "rb") as f:
        env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
    return env[b"JUPYTERHUB_API_TOKEN"].decode()


def test_an_admins_server_may_read_users_groups_and_a_users_server_may_not(embedded_hub, demo_session):
    """Spawner.server_token_scopes: what the admin notebook needs, granted to admins only."""
    from sgtest.hub import HubSession

    from science_gateway.hub.config import DEMO_USERS

    admin = HubSession(embedded_hub)
    assert admin.login("admin", DEMO_USERS["admin"][0]).status_code == 200
    admin.start_server("admin")
    demo_session.start_server("demo")
    api = f"{embedded_hub.url}/hub/api"

    def get(token, path):
        return requests.get(f"{api}{path}", headers={"Authorization": f"token {token}"}, timeout=30)

    admins_token = _server_token(admin, "admin")
    r = get(admins_token, "/users/demo")
    assert r.status_code == 200 and r.json()["groups"] == ["astro"]
    assert "servers" not in r.json() and "auth_state" not in r.json()  # names and groups, nothing more

    demos_token = _server_token(demo_session, "demo")
    assert get(demos_token, "/users/admin").status_code in (403, 404)
    assert get(demos_token, "/users").status_code == 403


def test_the_token_route_on_a_hub_without_tokens(embedded_hub, demo_session):
    """The gateway's token route: 404 "no token" for a login without auth_state, 403 otherwise."""
    demo_session.start_server("demo")
    url = f"{embedded_hub.url}/hub/api/gateway/token"
    token = _server_token(demo_session, "demo")
    auth = {"Authorization": f"token {token}"}
    r = requests.get(url, headers=auth, timeout=30)
    assert r.status_code == 404 and r.json()["message"].startswith("no token")
    assert requests.get(f"{url}/admin", headers=auth, timeout=30).status_code == 403
    assert requests.get(url, timeout=30).status_code == 403
    # the server's token reads no auth_state from the users API either
    own = requests.get(f"{embedded_hub.url}/hub/api/users/demo", headers=auth, timeout=30)
    assert own.status_code == 200 and "auth_state" not in own.json()


def test_no_token_keeper_where_there_is_nothing_to_keep(embedded_hub, demo_session):
    """Before: every server logged "the hub shows no access token ..." every minute."""
    from sgtest.hub import wait_for

    demo_session.start_server("demo")
    wait_for(lambda: "keeps no access token for demo" in embedded_hub.log_text(), 30, what="the keeper's one line")
    log = embedded_hub.log_text()
    assert "shows no access token" not in log and "Token keeper: fetching" not in log
    assert log.count("keeps no access token for demo") == 1


def _admin_api(hub):
    from sgtest.hub import HubSession

    from science_gateway.hub.config import DEMO_USERS

    admin = HubSession(hub)
    assert admin.login("admin", DEMO_USERS["admin"][0]).status_code == 200

    def call(method, path, **kwargs):
        return admin.http.request(method, f"{hub.url}/hub/api{path}", headers=admin.xsrf_headers(), timeout=60, **kwargs)

    return call


def test_spawn_options_are_refused_and_not_stored(embedded_hub):
    """Before: the local spawner stored any user_options (20 MB was stored and served back)."""
    api = _admin_api(embedded_hub)
    assert api("POST", "/users/carol").status_code in (201, 409)
    r = api("POST", "/users/carol/server", json={"huge": "x" * 2_000_000, "partition": "cpu"})
    assert r.status_code == 400, r.text[:300]
    message = r.json()["message"]
    assert "take no spawn options" in message and "'huge'" in message and len(message) < 300
    model = api("GET", "/users/carol").json()
    assert "x" * 100 not in str(model)
    # with no options it starts as before
    assert api("POST", "/users/carol/server", json={}).status_code in (201, 202)


def test_the_hubs_files_are_private_and_the_login_page_says_users_share_one_unix_user(embedded_hub):
    import stat

    from science_gateway.hub.config import ONE_UNIX_USER_NOTICE

    state = embedded_hub.state_dir
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    # the database, its write-ahead log and index, the cookie secret
    files = ["jupyterhub.sqlite", "jupyterhub_cookie_secret", *(p.name for p in state.glob("jupyterhub.sqlite-*"))]
    assert "jupyterhub.sqlite-wal" in files
    for name in files:
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name
    page = requests.get(f"{embedded_hub.url}/hub/login", timeout=30).text
    assert ONE_UNIX_USER_NOTICE.split(",")[0] in page


@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="needs a hub started by root")
def test_a_hub_started_by_root_refuses_to_run_servers_as_root(tmp_path):
    from sgtest.hub import HubSession, RunningHub

    from science_gateway.hub.config import DEMO_USERS

    with RunningHub(tmp_path, config={"LocalSpawner": {"allow_root": False}}) as hub:
        # the login lands on the spawn page, which starts the server: refused, with the reason
        page = HubSession(hub).login("admin", DEMO_USERS["admin"][0])
        log = hub.log_text()
    assert "Run the demo as a normal user" in page.text, page.text[:500]
    assert "Run the demo as a normal user" in log
    assert "Spawning jupyterhub-singleuser" not in log  # LocalProcessSpawner's line before it starts one
