"""Hostile input, generated: the REST API fuzzed from its OpenAPI file, the spawn API fuzzed with
user_options bodies, and no secret of the run in any log of the run.

- **REST API** (``jupyter_ext/openapi.yaml``): schemathesis generates cases for every operation,
  schema-valid and schema-violating ones, with the user's token and without it, and sends them to
  the demo user's real server through the embedded hub (its proxy, its token auth, the demo
  catalogue). Every response: not 5xx, its status declared for the operation, its body as the
  file documents it, schema-violating input refused.
- **Spawn API** on a hub whose spawner applies the group policy (the Slurm spawner; its ``sbatch``,
  ``scancel`` and ``squeue`` are stand-ins that only log, so a case that reached the scheduler is
  seen): generated ``user_options`` the policy refuses (and bodies that are not options at all),
  posted to start the default and named servers, put and patched onto named servers, sent by the
  spawn form and spawn URLs. Every answer 4xx with a short message (JSON on the API), no command
  run, no server started or pending, no refused option kept.
- **Logs**: every secret the run used (both hubs' processes' tokens and keys, cookie secrets,
  passwords, login cookies, API tokens) is in no log of the run, and no log holds a traceback.

The generation is derandomized (the same cases every run); the cases per operation are printed
at the end of the module (``fuzz: ...`` lines).
"""

from __future__ import annotations

import json
import secrets
import urllib.parse
from collections import Counter
from http.cookiejar import DefaultCookiePolicy
from importlib.resources import files

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, assume, example, given, settings
from hypothesis import strategies as st
from schemathesis import checks as base_checks
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi import checks as openapi_checks
from sgtest.commands import FakeCommand
from sgtest.hostile import HOSTILE
from sgtest.hub import HubSession, RunningHub
from sgtest.leaks import hub_secrets, leaks
from sgtest.notebooks import api_token
from sgtest.slurm import POLICY, USERS
from sgtest.slurm import hub_config as slurm_hub_config

from science_gateway.core.policy import REQUEST_KEYS, PolicyError, ResourcePolicy
from science_gateway.hub.passwords import hash_password

pytestmark = pytest.mark.hub

#: the file as installed (CI tests the wheel)
OPENAPI = files("science_gateway.jupyter_ext") / "openapi.yaml"
#: schema-violating input must get one of these (413/414: too large, refused before it is read;
#: 431: a URL too long for the HTTP layer in front of the API);
#: an explicit config, so no schemathesis.toml of the machine applies
CONFIG = SchemathesisConfig.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": [400, 401, 403, 404, 405, 409, 413, 414, 431]}}}
)
SCHEMA = schemathesis.openapi.from_path(str(OPENAPI), config=CONFIG)
OPERATIONS = {result.ok().label: result.ok() for result in SCHEMA.get_all_operations()}

#: generated cases per REST operation (16 operations: over 1,800 a run)
REST_CASES = 115
#: generated bodies for the spawn API, and for the spawn form and URL
SPAWN_CASES = 200
FORM_CASES = 60
#: an error message quotes at most a short prefix of what it refuses
MAX_MESSAGE = 600

#: what schemathesis checks on each response: no 5xx; status, content type, headers and body as
#: openapi.yaml declares them; schema-violating input refused (not a 2xx)
CHECKS = [
    base_checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.negative_data_rejection,
]

FUZZ_SETTINGS = dict(
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)

#: the demo user's group; their server's policy is the Slurm tests' (sgtest.slurm.POLICY)
GROUPS = USERS["demo"][1]


@pytest.fixture(scope="module")
def tally(request):
    """Cases per operation, printed when the module ends."""
    counts: Counter = Counter()
    yield counts
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    lines = [f"fuzz: {label}: {n} cases" for label, n in sorted(counts.items())]
    lines.append(f"fuzz: {sum(counts.values())} cases in all")
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)


@pytest.fixture(scope="module")
def run_secrets():
    """Secrets the tests make (passwords, tokens, cookies); the hubs' own are read at the end."""
    return {}


def long_password_users(names, groups_of, run_secrets) -> dict:
    users = {}
    for name in names:
        password = secrets.token_urlsafe(18)
        run_secrets[f"{name}'s password"] = password
        users[name] = {"password": hash_password(password), "groups": groups_of(name), "admin": name == "admin"}
    return users


def login(hub, name, run_secrets) -> HubSession:
    session = HubSession(hub)
    r = session.login(name, run_secrets[f"{name}'s password"])
    assert r.status_code == 200, r.text[:300]
    return session


def remember_cookies(session: HubSession, run_secrets, who: str) -> None:
    for cookie in session.http.cookies:
        run_secrets[f"{who}'s cookie {cookie.name}"] = cookie.value


# -- the REST API of a user's server --------------------------------------------------------------


@pytest.fixture(scope="module")
def rest_hub(tmp_path_factory, run_secrets):
    """The embedded default (local spawner, demo catalogue) with a logged-in demo user's server."""
    users = long_password_users(["demo", "admin"], lambda name: ["astro"] if name == "demo" else [], run_secrets)
    with RunningHub(tmp_path_factory.mktemp("rest-hub"), config={"DemoAuthenticator": {"users": users}}) as hub:
        # a mistyped password is a secret too
        typo = secrets.token_urlsafe(18)
        run_secrets["a mistyped password"] = typo
        assert HubSession(hub).login("demo", typo).status_code == 403
        session = login(hub, "demo", run_secrets)
        session.start_server("demo")
        hub.token = api_token(session, "demo", note="REST fuzz")
        run_secrets["demo's API token"] = hub.token
        remember_cookies(session, run_secrets, "demo")
        yield hub


def failure_report(failures: dict) -> str:
    lines = []
    for (title, status), (n, curl) in list(failures.items())[:10]:
        lines.append(f"{n} x {title} (status {status}), e.g.:\n    {curl[:400]}")
    return "\n".join(lines)


@pytest.mark.parametrize("label", list(OPERATIONS))
def test_rest_operation_fuzzed_from_openapi(rest_hub, label, tally):
    """Every response to generated input: no 5xx, and as openapi.yaml documents it."""
    operation = OPERATIONS[label]
    base_url = f"{rest_hub.url}/user/demo/gateway/api"
    auth = {"Authorization": f"token {rest_hub.token}"}
    # schema-valid and schema-violating input with the token; input without a valid token
    # (one in seven without: each unknown token costs the server a call to the hub)
    valid = operation.as_strategy(GenerationMode.POSITIVE, headers=auth)
    violating = operation.as_strategy(GenerationMode.NEGATIVE, headers=auth)
    unauthenticated = operation.as_strategy(GenerationMode.NEGATIVE)
    cases = st.sampled_from([valid] * 3 + [violating] * 3 + [unauthenticated]).flatmap(lambda strategy: strategy)
    # no cookies (the server sets one for a token it accepted): a case is authenticated by its own
    # header or not at all
    http = requests.Session()
    http.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    failures: dict = {}

    @settings(max_examples=REST_CASES, **FUZZ_SETTINGS)
    @given(cases)
    def run(case):
        tally[label] += 1
        response = case.call(base_url=base_url, session=http, timeout=30)
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as group:
            for failure in group.exceptions:
                key = (failure.title, response.status_code)
                n, curl = failures.get(key, (0, case.as_curl_command(base_url=base_url)))
                failures[key] = (n + 1, curl)

    run()
    assert tally[label] >= REST_CASES * 0.9, f"only {tally[label]} cases for {label}"
    assert not failures, f"{label}: {sum(n for n, _ in failures.values())} failing cases:\n{failure_report(failures)}"


# -- the spawn API on a hub that applies the group policy ----------------------------------------


def refused_by_policy(options) -> bool:
    try:
        ResourcePolicy(groups=POLICY).validate(GROUPS, options)
    except PolicyError:
        return True
    return False


@pytest.fixture(scope="module")
def policy_hub(tmp_path_factory, run_secrets):
    """The Slurm spawner with the test policy, its scheduler commands stand-ins that only log."""
    state = tmp_path_factory.mktemp("policy-hub")
    commands = {name: FakeCommand(state / "commands", name) for name in ("sbatch", "scancel", "squeue", "sinfo")}
    config = slurm_hub_config(state / "commands", job_name="sgtest-fuzz")
    config["JupyterHub"]["allow_named_servers"] = True
    config["DemoAuthenticator"]["users"] = long_password_users(
        ["demo", "admin"], lambda name: USERS[name][1], run_secrets
    )
    with RunningHub(state / "hub", config=config) as hub:
        hub.commands = commands
        hub.demo = login(hub, "demo", run_secrets)
        hub.admin = login(hub, "admin", run_secrets)
        remember_cookies(hub.demo, run_secrets, "demo (policy hub)")
        remember_cookies(hub.admin, run_secrets, "admin (policy hub)")
        # a stopped named server to patch
        assert hub.demo.api("/users/demo/servers/fz-a", method="PUT", json={}).status_code == 201
        yield hub


def no_server_and_nothing_kept(hub) -> list[str]:
    """What is wrong with demo's servers after a refused request ([] when nothing)."""
    model = hub.admin.api("/users/demo?include_stopped_servers=1").json()
    problems = []
    for name, server in model["servers"].items():
        if server["ready"] or server["pending"] or not server["stopped"]:
            problems.append(f"server {name!r} is {server['pending'] or 'running'}")
        if server.get("user_options"):
            problems.append(f"server {name!r} keeps the options {json.dumps(server['user_options'])[:100]}")
    calls = {name: command.calls() for name, command in hub.commands.items() if name not in ("squeue", "sinfo")}
    problems.extend(f"{name} ran {n} times" for name, n in calls.items() if n)
    return problems


#: option keys: the policy's, the ones batchspawner and KubeSpawner would read, and any text
KEYS = st.one_of(
    st.sampled_from(REQUEST_KEYS),
    st.sampled_from(["batch_script", "req_options", "cmd", "image", "uid", "env", "profile", "display_name",
                     "user_options", "kubespawner_override", "node_selector", "__class__"]),
    st.text(max_size=40),
)
#: values: allowed ones, other groups' ones, shell and Slurm injection, every JSON type, edges
VALUES = st.one_of(
    st.sampled_from(["cpu", "long", "debug", "astro-2024", "astro-dev", "teaching", "", " 1", "1 ", "0x2",
                     "1e3", "\uff11", "1; touch /tmp/pwned", "cpu\n#SBATCH --uid=0", "--uid=0", "$(id)",
                     "`id`", "../../etc", "\x00", "cpu\r\n"]),
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=60),
    st.lists(st.integers() | st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=3),
)
OPTIONS = st.dictionaries(KEYS, VALUES, min_size=1, max_size=6)
SERVERS = st.sampled_from(["", "fz-a"])
HOSTILE_OPTIONS = [param.values[0] for param in HOSTILE]


def request_for(method: str, server: str) -> str:
    return f"/users/demo/server" if (server == "" and method == "POST") else f"/users/demo/servers/{server}"


def not_a_plain_start(body: bytes) -> bool:
    """Not an empty body, ``null`` or ``{}``: those start a server with the saved options (valid)."""
    if not body.strip():
        return False
    try:
        return json.loads(body) not in (None, {})
    except ValueError:
        return True


@st.composite
def spawn_requests(draw):
    """(method, path, body bytes) of a request the policy must refuse, or that is not options at all."""
    kind = draw(st.sampled_from(["options", "options", "options", "wrapped", "not-options"]))
    server = draw(SERVERS)
    method = draw(st.sampled_from(["POST", "POST", "POST", "PATCH", "PUT"]))
    if method == "PUT":
        server = draw(st.sampled_from(["fz-a", "fz-new"]))
    elif method == "PATCH":
        server = "fz-a"
    if kind == "not-options":
        body = draw(st.one_of(
            st.binary(max_size=40).filter(not_a_plain_start),
            st.sampled_from([b"[]", b"7", b'"x"', b"{" * 5000, b'{"user_options": [1]}', b'{"display_name": 5}',
                             b'{"a": NaN}', b'{"cores": "1; id"}' + b" " * 70000]),
            st.recursive(st.integers() | st.text(max_size=5), lambda inner: st.lists(inner, max_size=3), max_leaves=8)
            .map(lambda value: json.dumps(value).encode()),
        ))
        return method, request_for(method, server), body
    options = draw(OPTIONS | st.sampled_from(HOSTILE_OPTIONS))
    assume(refused_by_policy(options))
    # a body holding "user_options" or "display_name" is read as those two, not as the options
    if kind == "wrapped" or method == "PATCH" or {"user_options", "display_name"} & set(options):
        body = {"user_options": options, "display_name": draw(st.sampled_from(["fuzz", "", "x" * 300]))}
        if method == "PATCH":
            body.pop("display_name")
    else:
        body = options
    return method, request_for(method, server), json.dumps(body).encode()


def check_refused(hub, method, path, body, response, *, json_api=True) -> list[str]:
    problems = []
    if not 400 <= response.status_code < 500:
        problems.append(f"status {response.status_code}")
    if json_api:
        try:
            message = response.json()["message"]
        except (ValueError, KeyError, TypeError):
            problems.append("no JSON message")
        else:
            if not isinstance(message, str) or not message or len(message) > MAX_MESSAGE:
                problems.append(f"message of {len(str(message))} characters")
    problems.extend(no_server_and_nothing_kept(hub))
    return [f"{method} {path} {body[:120]!r}: {p}" for p in problems]


@settings(max_examples=SPAWN_CASES, **FUZZ_SETTINGS)
@given(request=spawn_requests())
@example(request=("POST", "/users/demo/servers/fz-a", json.dumps({"cores": "1; touch /tmp/pwned"}).encode()))
@example(request=("PATCH", "/users/demo/servers/fz-a", b'{"bogus": 1}'))
@example(request=("PATCH", "/users/demo/servers/fz-a", json.dumps({"user_options": {"cores": "rm -rf"}}).encode()))
@example(request=("PUT", "/users/demo/servers/fz-new", json.dumps({"user_options": {"x" * 5000: 1}}).encode()))
@example(request=("POST", "/users/demo/server", b"{not json"))
def check_spawn_request(hub, tally, found, request):
    method, path, body = request
    tally[f"hub {method} {path.replace('fz-a', '{name}').replace('fz-new', '{name}')}"] += 1
    r = hub.demo.api(path, method=method, data=body)
    found.extend(check_refused(hub, method, path, body, r))


def test_spawn_api_refuses_generated_options(policy_hub, tally):
    found: list[str] = []
    check_spawn_request(policy_hub, tally, found)
    assert not found, f"{len(found)} problems, e.g.:\n" + "\n".join(found[:10])


FORM_VALUES = st.one_of(st.sampled_from(["cpu", "long", "debug", "teaching", "1; id", "cpu\n#SBATCH --uid=0", "-1",
                                         "99999", "\uff11", "", "1e3"]), st.text(max_size=30))
FORM = st.dictionaries(st.sampled_from([*REQUEST_KEYS, "batch_script", "image", "x"]), FORM_VALUES, min_size=1, max_size=5)


def form_options(form: dict) -> dict:
    """What the spawn form's parser makes of a form (the oracle: the policy must refuse it)."""
    from science_gateway.spawners.form import options_from_form_data

    try:
        return options_from_form_data({key: [value] for key, value in form.items()})
    except Exception:  # the parser refusing is a refusal too
        return {"unparsable": True}


def test_spawn_form_and_url_refuse_generated_options(policy_hub, tally):
    found: list[str] = []
    spawn = f"{policy_hub.url}/hub/spawn/demo"

    @settings(max_examples=FORM_CASES, **FUZZ_SETTINGS)
    @given(form=FORM, how=st.sampled_from(["form", "url"]))
    def run(form, how):
        assume(refused_by_policy(form_options(form)))
        tally[f"hub spawn {how}"] += 1
        http = policy_hub.demo.http
        if how == "form":
            r = http.post(spawn, data={**form, "_xsrf": policy_hub.demo.xsrf_headers().get("X-XSRFToken", "")},
                          timeout=30, allow_redirects=False)
        else:
            r = http.get(f"{spawn}?{urllib.parse.urlencode(form)}", timeout=30, allow_redirects=False)
        problems = check_refused(policy_hub, how, "/hub/spawn/demo", repr(form).encode(), r, json_api=False)
        if r.status_code < 500 and "Traceback" in r.text:
            problems.append(f"{how} {form!r}: a traceback in the page")
        found.extend(problems)

    run()
    assert not found, f"{len(found)} problems, e.g.:\n" + "\n".join(found[:10])


#: generated launch links (``/hub/launch?...``)
LAUNCH_CASES = 80
NOTEBOOKS = st.one_of(st.sampled_from(["01-astronomer-walkthrough.ipynb", "../../etc/passwd.ipynb", "/etc/x.ipynb",
                                       ".hidden.ipynb", "a/../b.ipynb", "a.py", "%2e%2e/x.ipynb", "x" * 300]),
                      st.text(max_size=40))
DATASETS = st.one_of(st.sampled_from(["demo:run2024.raw.0001", "demo:../x", "nope", "a:b:c", ""]), st.text(max_size=30))


def link_refused(link: dict) -> bool:
    """The oracle: the link's syntax (core.launch) or its choices (the policy) refuse it."""
    from science_gateway.core.launch import LaunchError, parse_launch_query

    try:
        parsed = parse_launch_query({k: [v] for k, v in link.items()})
    except LaunchError:
        return True
    return refused_by_policy(parsed.options)


def test_launch_links_are_refused_or_sent_on_and_never_spawn(policy_hub, tally):
    """Generated launch links: a refused one is a 400 page with a short reason; an accepted one is
    sent on to JupyterHub's spawn (a redirect) or shows the form; neither starts or keeps anything."""
    found: list[str] = []
    launch = f"{policy_hub.url}/hub/launch"

    @settings(max_examples=LAUNCH_CASES, **FUZZ_SETTINGS)
    @given(notebook=NOTEBOOKS, dataset=st.one_of(st.none(), DATASETS), choices=st.one_of(st.just({}), FORM))
    @example(notebook="01-astronomer-walkthrough.ipynb", dataset=None, choices={"cores": "1; id"})
    @example(notebook="x.ipynb", dataset="demo:x", choices={"partition": "cpu\n#SBATCH --uid=0"})
    @example(notebook="a/b.ipynb", dataset="demo:run2024.raw.0001", choices={"partition": "cpu"})  # the form
    @example(notebook="b.ipynb", dataset=None, choices={})
    def run(notebook, dataset, choices):
        link = {"notebook": notebook, **({"dataset": dataset} if dataset is not None else {}), **choices}
        refused = link_refused(link)
        tally["hub launch link " + ("refused" if refused else "accepted")] += 1
        r = policy_hub.demo.http.get(f"{launch}?{urllib.parse.urlencode(link)}", timeout=30, allow_redirects=False)
        where = f"GET /hub/launch {link!r}"[:200]
        if refused:
            found.extend(check_refused(policy_hub, "GET", "/hub/launch", repr(link).encode(), r, json_api=False))
            if r.status_code == 400 and "This launch link is refused" not in r.text:
                found.append(f"{where}: no reason on the page")
        else:
            if not (r.status_code == 302 and r.headers["Location"].startswith("/hub/spawn/demo?") or r.status_code == 200):
                found.append(f"{where}: status {r.status_code} for a link the policy accepts")
            found.extend(f"{where}: {p}" for p in no_server_and_nothing_kept(policy_hub))
        if "Traceback" in r.text:
            found.append(f"{where}: a traceback in the page")

    run()
    assert not found, f"{len(found)} problems, e.g.:\n" + "\n".join(found[:10])


#: generated cases for the gateway's own hub routes (token, effective policy)
HUB_ROUTE_CASES = 60


def test_gateways_hub_routes_answer_generated_input_with_json(policy_hub, tally):
    """``/hub/api/gateway/token[/NAME]`` and ``/effective-policy/NAME[?groups=...]``, as an admin
    and as a user: JSON, never 5xx, never a token (the demo login keeps none)."""
    found: list[str] = []
    names = st.one_of(st.sampled_from(["demo", "admin", "nobody", "..", "%2e%2e", "a" * 300]), st.text(min_size=1, max_size=40))
    groups = st.one_of(st.none(), st.sampled_from(["", ",", "astro", "astro,students", ",".join(["g"] * 200)]),
                       st.text(max_size=60))

    @settings(max_examples=HUB_ROUTE_CASES, **FUZZ_SETTINGS)
    @given(route=st.sampled_from(["token", "effective-policy"]), name=names, groups=groups,
           who=st.sampled_from(["admin", "demo"]))
    def run(route, name, groups, who):
        tally[f"hub GET /hub/api/gateway/{route}/{{name}}"] += 1
        session = getattr(policy_hub, who)
        path = f"/gateway/{route}/{urllib.parse.quote(name, safe='')}"
        params = {"groups": groups} if groups is not None else None
        r = session.api(path, params=params)
        where = f"{who} GET {path[:80]} groups={str(groups)[:40]!r}"
        if r.status_code >= 500:
            found.append(f"{where}: status {r.status_code}")
        elif r.status_code != 404 or r.headers.get("Content-Type", "").startswith("application/json"):
            try:
                body = r.json()
            except ValueError:
                found.append(f"{where}: status {r.status_code}, not JSON")
                return
            if r.status_code >= 400 and not (isinstance(body.get("message"), str) and len(body["message"]) <= MAX_MESSAGE):
                found.append(f"{where}: status {r.status_code} without a short message")
            if "access_token" in body:
                found.append(f"{where}: a token")

    run()
    assert not found, f"{len(found)} problems, e.g.:\n" + "\n".join(found[:10])


# -- what the fuzzing found, each with the input that showed it ------------------------------------

FOUND = [
    # JupyterHub's API 404 says "message": null (requests turns /token/.. into /hub/api/gateway/)
    pytest.param("GET", "/gateway/", b"", "No such gateway route", id="gateway-404"),
    # JupyterHub answered 500 (its message calls join on a set)
    pytest.param("PATCH", "/users/demo/servers/fz-a", b'{"bogus": 1}', "Unknown key 'bogus'", id="patch-unknown-key"),
    # JupyterHub stored the options unchecked and served them back
    pytest.param("PATCH", "/users/demo/servers/fz-a", b'{"user_options": {"cores": "rm -rf"}}', "only with a start",
                 id="patch-options"),
    pytest.param("PUT", "/users/demo/servers/fz-new", b'{"user_options": {"cores": 64}}', "only with a start",
                 id="put-options"),
    # kept as the user's defaults after the policy refused them, with a traceback in the hub's log
    pytest.param("POST", "/users/demo/server", b'{"cores": "1; touch /tmp/pwned"}', "cores must be a whole number",
                 id="post-refused-options"),
    pytest.param("POST", "/users/demo/servers/fz-a", b'{"partition": "debug"}', "not allowed for your groups",
                 id="post-named-refused-options"),
    # JupyterHub logged a traceback and the body
    pytest.param("POST", "/users/demo/server", b"{not json", "not JSON", id="not-json"),
]


@pytest.mark.parametrize("method, path, body, message", FOUND)
def test_what_the_spawn_fuzzing_found(policy_hub, method, path, body, message):
    before = policy_hub.log_text()
    r = policy_hub.demo.api(path, method=method, data=body)
    assert 400 <= r.status_code < 500 and message in r.json()["message"], (r.status_code, r.text[:300])
    assert not no_server_and_nothing_kept(policy_hub)
    new_lines = policy_hub.log_text()[len(before):]
    assert "Traceback" not in new_lines and "Exception applying user_options" not in new_lines, new_lines[-2000:]
    assert "rm -rf" not in new_lines and "{not json" not in new_lines


def test_a_refused_option_is_not_kept_for_the_next_start(policy_hub):
    """Before: the refused options became the defaults of the next start without options."""
    demo = policy_hub.demo
    assert demo.api("/users/demo/server", method="POST", json={"cores": 64}).status_code == 400
    model = policy_hub.admin.api("/users/demo").json()
    assert not model["servers"]
    stored = policy_hub.admin.api("/users/demo?include_stopped_servers=1").json()["servers"][""]
    assert stored["user_options"] == {}


# -- the logs of the run --------------------------------------------------------------------------


def test_no_secret_of_the_run_and_no_traceback_in_any_log(rest_hub, policy_hub, run_secrets, tally):
    """Last in the module: the secrets are read while everything still runs."""
    found = {**run_secrets, **{f"REST hub: {k}": v for k, v in hub_secrets(rest_hub).items()},
             **{f"policy hub: {k}": v for k, v in hub_secrets(policy_hub).items()}}
    names = " ".join(found)
    for expected in ("JUPYTERHUB_API_TOKEN", "CONFIGPROXY_AUTH_TOKEN", "JUPYTERHUB_CRYPT_KEY", "jupyterhub_cookie_secret"):
        assert expected in names, f"the run's secrets include no {expected}: {sorted(found)}"
    logs = {"the REST hub's log (hub, proxy, demo's server)": rest_hub.log_text(),
            "the policy hub's log": policy_hub.log_text()}
    assert not leaks(found, logs), leaks(found, logs)
    for name, text in logs.items():
        assert "Traceback" not in text, f"a traceback in {name}:\n" + text[text.index("Traceback") - 300:][:2000]
    rest = sum(n for label, n in tally.items() if label in OPERATIONS)
    assert rest >= 1000 and sum(tally.values()) - rest >= SPAWN_CASES, dict(tally)
