"""The gateway's routes in the hub's REST API (``{hub}/api/gateway/...``).

- ``GET /hub/api/gateway/token``: the calling token's own user's current OIDC access token, and
  nothing else (``{"access_token", "expires_at"}``). The hub refreshes the user's tokens on the way
  (JupyterHub's ``refresh_auth`` for the authenticated user, which calls the authenticator's
  ``refresh_user`` at most every ``auth_refresh_age``). It needs the custom scope
  :data:`TOKEN_SCOPE` for that user: the ``user`` role holds it for each user's own name and
  ``Spawner.server_token_scopes`` passes it to their servers (see ``hub/config.py``). A server's
  token therefore never needs ``admin:auth_state``, so the refresh token never leaves the hub.
  ``/hub/api/gateway/token/{name}`` is the same, refused (403) for any name but the caller's own.
  404 ``{"message": "no token ..."}`` when there is none (an authenticator without auth_state,
  like the demo login): the token keeper then stops asking.
- ``GET /hub/api/gateway/usage``: the calling token's own user's usage from Slurm accounting
  (:mod:`science_gateway.core.accounting`): core- and GPU-hours of notebook servers, Dask workers and
  other jobs, by account and by group (VO), and what is left of each allocation the user may
  charge; from the hub's one cached snapshot (no scheduler query per request). The token must be
  the user's own and hold one of :data:`USAGE_SCOPES` for that user (a browser session and a user's
  API token hold ``read:users``, each server's token ``users:activity``); ``/usage/{name}`` is
  refused (403) for any name but the caller's own, admins included (they read the report). 404
  while ``SlurmAccounting.enabled`` is off.
- ``GET /hub/api/gateway/accounting/report?start=YYYY-MM-DD&end=YYYY-MM-DD[&format=csv]``: usage per
  VO, account, user and kind over the date range, as JSON or CSV (an allocation system's import);
  admins only; one ``sacct`` per report. The same as a page for admins: ``/hub/accounting`` (a
  date-range form, the table, links to the CSV and JSON).
- ``GET /hub/api/gateway/effective-policy/{username}[?groups=a,b]``: the admin's report
  (:mod:`.effective`) from this hub's running authenticator, spawner class and config; admins only.
- JupyterHub's own server routes (``/hub/api/users/{name}/server`` and ``.../servers/{server}``),
  through :class:`ServerAPIHandler`: the same API, with the body checked before JupyterHub acts
  on it (see there).

- ``GET /hub/launch?notebook=...&dataset=...&partition=...``: a launch link (:mod:`.launch`), a
  page for browsers rather than an API route.

The routes reach the hub through the gateway authenticators' ``get_handlers`` (JupyterHub's
documented way for an authenticator to add handlers); :func:`gateway_handlers` lists them for
any other authenticator subclass.
"""

from __future__ import annotations

import json
import time

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.apihandlers.users import UserServerAPIHandler
from jupyterhub.handlers.base import BaseHandler
from jupyterhub.scopes import has_scope, needs_scope
from jupyterhub.user import User
from tornado import web

from ..core.accounting import REPORT_COLUMNS, AccountingUnavailable, report_csv, shared_accounting
from ..core.policy import ResourcePolicy
from ..core.text import quote_prefix
from .effective import effective_policy
from .launch import LaunchHandler

#: the custom scope that lets a token read its own user's access token from the route
TOKEN_SCOPE = "custom:gateway-token"
TOKEN_SCOPE_DESCRIPTION = "Read your current OIDC access token (not the refresh token) from the gateway."
#: scopes (for the user's own name) any of which lets a token read its user's usage: what a user's
#: session and API tokens (``self``) and each server's token already hold
USAGE_SCOPES = ("read:users", "users:activity")
#: the auth_state key where the authenticator records the user's unix account (hub/oauth.py)
UNIX_ACCOUNT_KEY = "unix_account"
#: longest username or group list accepted by the effective-policy route
MAX_NAME = 255
MAX_GROUPS = 100


class GatewayAPIHandler(APIHandler):
    """JupyterHub's API handler (its JSON errors and auth) with the caller as a User or a 403."""

    def caller(self) -> User:
        user = self.current_user
        if user is None:
            raise web.HTTPError(403, "Missing or invalid credentials.")
        if not isinstance(user, User):
            raise web.HTTPError(403, "This route is for users and their servers, not services.")
        return user

    def has(self, scope: str) -> bool:
        return has_scope(scope, self.parsed_scopes, db=self.db)


class TokenHandler(GatewayAPIHandler):
    """``GET /hub/api/gateway/token[/{name}]`` (see the module docstring)."""

    async def get(self, name: str | None = None):
        user = self.caller()
        if name is not None and name != user.name:
            raise web.HTTPError(403, f"A token may read only its own user's access token, not the one of {quote_prefix(name)}.")
        if not self.has(f"{TOKEN_SCOPE}!user={user.name}"):
            raise web.HTTPError(
                403,
                f"This token lacks the scope {TOKEN_SCOPE}: give the JupyterHub `user` role "
                f'"{TOKEN_SCOPE}!user" and keep it in Spawner.server_token_scopes (docs/authentication.md).',
            )
        auth_state = await user.get_auth_state() if self.authenticator.enable_auth_state else None
        token = auth_state.get("access_token") if isinstance(auth_state, dict) else None
        if not isinstance(token, str) or not token:
            raise web.HTTPError(404, f"no token: the hub holds no access token for {user.name} (this login keeps none)")
        expires_at = auth_state.get("expires_at")
        self.set_header("Cache-Control", "no-store")
        self.write(json.dumps({
            "access_token": token,
            "expires_at": expires_at if isinstance(expires_at, (int, float)) else None,
        }))


class EffectivePolicyHandler(GatewayAPIHandler):
    """``GET /hub/api/gateway/effective-policy/{username}[?groups=a,b]``, for admins."""

    async def get(self, username: str):
        caller = self.caller()
        if not caller.admin:
            raise web.HTTPError(
                403, f"The effective-policy report is for gateway admins, and {caller.name} is not one: ask an admin."
            )
        if len(username) > MAX_NAME:
            raise web.HTTPError(400, f"username {quote_prefix(username)} is longer than {MAX_NAME} characters")
        groups_arg = self.get_argument("groups", None)
        admin = None
        if groups_arg is None:
            if not self.has(f"read:users:groups!user={username}"):
                raise web.HTTPError(403, "This token may not read users' groups (read:users:groups): "
                                         "use an admin's server token or session, or pass ?groups=a,b.")
            user = self.find_user(username)
            if user is None:
                raise web.HTTPError(
                    404, f"The hub has no user {quote_prefix(username)}: pass ?groups=a,b to see what members "
                         "of those groups would get."
                )
            groups, admin = [g.name for g in user.groups], bool(user.admin)
        else:
            groups = [g for g in groups_arg.split(",") if g]
            if len(groups) > MAX_GROUPS or any(len(g) > MAX_NAME for g in groups):
                raise web.HTTPError(400, f"groups {quote_prefix(groups_arg)}: at most {MAX_GROUPS} names "
                                         f"of at most {MAX_NAME} characters")
        report = await effective_policy(self.authenticator, self.spawner_class, self.config, username, groups,
                                        admin=admin)
        self.write(json.dumps(report.as_dict()))


class AccountingHandler(GatewayAPIHandler):
    """What the usage routes share: the hub's accounting view and policy, 404 while it is off."""

    def accounting(self):
        accounting = shared_accounting(config=self.config)
        if not accounting.enabled:
            raise web.HTTPError(404, "Usage accounting is not enabled on this gateway (SlurmAccounting.enabled).")
        return accounting

    def policy(self) -> ResourcePolicy:
        return ResourcePolicy(config=self.config)

    async def snapshot(self, accounting):
        snapshot = await accounting.snapshot()
        if snapshot is None:
            raise web.HTTPError(503, f"Slurm accounting is not answering ({accounting.last_error or 'no answer yet'}); "
                                     "try again in a minute.")
        return snapshot


def vo_lookup(policy: ResourcePolicy):
    """``vo_of(user, account)``: the first group (by name) whose policy lists the account, else "-"."""
    owner = {}
    for group in sorted(policy.groups):
        for account in policy.groups[group].accounts:
            owner.setdefault(account, group)
    return lambda user, account: owner.get(account, "-")


class UsageHandler(AccountingHandler):
    """``GET /hub/api/gateway/usage[/{name}]`` (see the module docstring)."""

    async def get(self, name: str | None = None):
        user = self.caller()
        if name is not None and name != user.name:
            raise web.HTTPError(403, f"A token may read only its own user's usage, not the one of {quote_prefix(name)}.")
        if not any(self.has(f"{scope}!user={user.name}") for scope in USAGE_SCOPES):
            raise web.HTTPError(
                403, f"This token may not read {user.name}'s usage: it needs {' or '.join(USAGE_SCOPES)} "
                     f"for {user.name} (a session, a user API token or the server's token has it).")
        accounting = self.accounting()
        snapshot = await self.snapshot(accounting)
        auth_state = await user.get_auth_state() if self.authenticator.enable_auth_state else None
        unix = auth_state.get(UNIX_ACCOUNT_KEY) if isinstance(auth_state, dict) else None
        unix = unix if isinstance(unix, str) and unix else user.name
        policy = self.policy()
        groups = sorted(g.name for g in user.groups)
        choices = policy.choices(groups)
        usage = snapshot.user_usage(unix)
        vo_of = vo_lookup(policy)
        by_group: dict[str, dict] = {}
        for account, totals in usage["by_account"].items():
            vo = vo_of(unix, account)
            into = by_group.setdefault(vo, {k: {"jobs": 0, "core_hours": 0.0, "gpu_hours": 0.0} for k in totals})
            for kind, numbers in totals.items():
                for key, value in numbers.items():
                    into[kind][key] = round(into[kind][key] + value, 4)
        self.set_header("Cache-Control", "no-store")
        self.write(json.dumps({
            "user": user.name, "unix_account": unix, "groups": groups,
            "since": snapshot.start, "as_of": snapshot.end.replace("T", " "),
            **usage, "by_group": by_group,
            "allocations": [status.as_dict() for status in snapshot.allocations(unix, choices.accounts).values()],
        }))


class AccountingReportHandler(AccountingHandler):
    """``GET /hub/api/gateway/accounting/report?start=&end=[&format=csv]``, for admins."""

    async def get(self):
        caller = self.caller()
        if not caller.admin:
            raise web.HTTPError(403, f"The accounting report is for gateway admins, and {caller.name} is not one.")
        accounting = self.accounting()
        start, end = self.get_argument("start", ""), self.get_argument("end", "")
        form = self.get_argument("format", "json")
        if form not in ("json", "csv"):
            raise web.HTTPError(400, f"format {quote_prefix(form)}: json or csv")
        try:
            report = await accounting.report(start, end, vo_lookup(self.policy()))
        except ValueError as e:
            raise web.HTTPError(400, str(e)) from None
        except AccountingUnavailable as e:
            raise web.HTTPError(503, f"Slurm accounting is not answering: {e}") from None
        if form == "csv":
            self.set_header("Content-Type", "text/csv; charset=utf-8")
            self.set_header("Content-Disposition", f'attachment; filename="usage-{start}-{end}.csv"')
            self.write(report_csv(report["rows"]))
        else:
            self.write(json.dumps(report))


#: the admin page: JupyterHub's own page template, a date-range form, the report's table
REPORT_PAGE = """{% extends "page.html" %}
{% block main %}
<div class="container" id="sg-accounting">
  <h1>Usage by VO and account</h1>
  <form method="get" class="row g-2 mb-3">
    <div class="col-auto"><label class="form-label" for="sg-start">From</label>
      <input class="form-control" type="date" id="sg-start" name="start" value="{{ start|e }}" required></div>
    <div class="col-auto"><label class="form-label" for="sg-end">To</label>
      <input class="form-control" type="date" id="sg-end" name="end" value="{{ end|e }}" required></div>
    <div class="col-auto align-self-end"><button class="btn btn-primary" type="submit">Show</button></div>
  </form>
  {% if error %}<div class="alert alert-danger">{{ error|e }}</div>{% endif %}
  {% if report %}
  <p>As of {{ report.as_of|e }}. Export:
    <a href="{{ base_url|e }}api/gateway/accounting/report?start={{ start|e }}&end={{ end|e }}&format=csv">CSV</a>,
    <a href="{{ base_url|e }}api/gateway/accounting/report?start={{ start|e }}&end={{ end|e }}">JSON</a></p>
  <table class="table table-sm table-striped">
    <thead><tr>{% for c in columns %}<th>{{ c|e }}</th>{% endfor %}</tr></thead>
    <tbody>{% for row in report.rows %}<tr>{% for c in columns %}<td>{{ row[c]|e }}</td>{% endfor %}</tr>{% endfor %}
    </tbody>
  </table>
  {% endif %}
</div>
{% endblock %}
"""


class AccountingPageHandler(BaseHandler):
    """``GET /hub/accounting[?start=&end=]``: the admin report as a page (admins only)."""

    @web.authenticated
    async def get(self):
        user = self.current_user
        if not user.admin:
            raise web.HTTPError(403, "The accounting report is for gateway admins.")
        accounting = shared_accounting(config=self.config)
        if not accounting.enabled:
            raise web.HTTPError(404, "Usage accounting is not enabled on this gateway (SlurmAccounting.enabled).")
        start = self.get_argument("start", accounting.window_start()[:10])
        end = self.get_argument("end", time.strftime("%Y-%m-%d"))
        report, error = None, ""
        try:
            report = await accounting.report(start, end, vo_lookup(ResourcePolicy(config=self.config)))
        except (ValueError, AccountingUnavailable) as e:
            error = str(e)
        template = self.settings["jinja2_env"].from_string(REPORT_PAGE)
        namespace = dict(self.template_namespace, start=start, end=end, report=report, error=error,
                         columns=REPORT_COLUMNS)
        self.finish(await template.render_async(**namespace))


class GatewayNotFoundHandler(GatewayAPIHandler):
    """Any other path under ``/hub/api/gateway``: 404 saying which routes there are (JupyterHub's
    own API 404 has ``"message": null``)."""

    def check_xsrf_cookie(self):
        pass

    async def prepare(self):
        await super().prepare()
        raise web.HTTPError(
            404, "No such gateway route: the hub's gateway routes are /hub/api/gateway/token, "
                 "/hub/api/gateway/usage, /hub/api/gateway/accounting/report and "
                 "/hub/api/gateway/effective-policy/USERNAME (docs/configuration.md)."
        )


#: the keys JupyterHub's PATCH of a server reads
PATCH_KEYS = ("name", "display_name", "user_options")


class ServerAPIHandler(UserServerAPIHandler):
    """JupyterHub's server API (start, create, edit, stop), with the body checked first.

    Found by fuzzing the spawn API (tests/gateway/test_hostile_fuzz.py), each with JupyterHub 6.1:

    - **POST** (start): the options of a stopped server are checked by the spawner's own hook
      (the group policy, or the local spawner's "no options") before JupyterHub makes the
      server's API token and OAuth client and saves the options as the user's defaults: a
      refused request costs the hub a few milliseconds instead of half a second, and leaves
      nothing behind. A new named server's options are checked at its spawn, as before.
    - **PUT** and **PATCH** with ``user_options``: JupyterHub stores them unchecked, whatever their
      size, serves them back in the user's model, and PATCH logs them whole. This gateway takes
      options only with a start, where they are checked: 400, saying so.
    - **PATCH** with an unknown key: JupyterHub answers 500 (its error message calls ``join`` on a
      set); here 400 listing the keys it takes.
    - A body that is not JSON: JupyterHub logs a traceback and the body; here one 400, no log.
    """

    def get_json_body(self):
        if not self.request.body:
            return None
        try:
            return json.loads(self.request.body)
        except (ValueError, RecursionError):
            raise web.HTTPError(400, "The body is not JSON: send a JSON object, e.g. {} or {\"cores\": 2}.") from None

    def _body(self) -> dict:
        body = self.get_json_body()
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise web.HTTPError(400, f"The body is JSON {type(body).__name__}, not an object: send e.g. {{}} or {{\"cores\": 2}}.")
        return body

    def _refuse_stored_options(self, options) -> None:
        if options:
            raise web.HTTPError(
                400,
                "This gateway takes spawn options only with a start (POST .../server or .../servers/NAME), "
                "where they are checked against your groups' policy; it does not store them apart from one.",
            )

    @needs_scope("start:servers")
    async def post(self, user_name, server_name=""):
        body = self._body()
        user = self.find_user(user_name)
        options = self.get_server_json_body()["user_options"] if body else None
        if options and user is not None and (server_name == "" or server_name in user.orm_spawners):
            spawner = user.get_spawner(server_name)
            if not spawner.active:
                # the spawner's own check (JupyterHub's runner of apply_user_options), as at spawn
                await spawner._run_apply_user_options(options)
        return await super().post(user_name, server_name)

    @needs_scope("start:servers")
    async def put(self, user_name, server_name=""):
        if self._body():
            # JupyterHub reads a body without "user_options" or "display_name" as the options
            self._refuse_stored_options(self.get_server_json_body()["user_options"])
        return await super().put(user_name, server_name)

    @needs_scope("start:servers")
    async def patch(self, user_name, server_name=""):
        body = self._body()
        unknown = sorted(set(body) - set(PATCH_KEYS))
        if unknown:
            raise web.HTTPError(
                400, f"Unknown key {quote_prefix(unknown[0])} in the body; a server's edit takes {', '.join(PATCH_KEYS)}."
            )
        self._refuse_stored_options(body.get("user_options"))
        return await super().patch(user_name, server_name)


def gateway_handlers() -> list[tuple]:
    """The routes above, for an authenticator's ``get_handlers`` (paths relative to the hub prefix;
    an authenticator's routes come before JupyterHub's own, so these replace its server routes)."""
    return [
        (r"/api/gateway/token", TokenHandler),
        (r"/api/gateway/token/([^/]+)", TokenHandler),
        (r"/api/gateway/effective-policy/([^/]+)", EffectivePolicyHandler),
        (r"/api/gateway/usage", UsageHandler),
        (r"/api/gateway/usage/([^/]+)", UsageHandler),
        (r"/api/gateway/accounting/report", AccountingReportHandler),
        (r"/accounting", AccountingPageHandler),
        (r"/api/gateway(?:/.*)?", GatewayNotFoundHandler),
        (r"/api/users/([^/]+)/server", ServerAPIHandler),
        (r"/api/users/([^/]+)/servers/([^/]*)", ServerAPIHandler),
        (r"/launch", LaunchHandler),
    ]
