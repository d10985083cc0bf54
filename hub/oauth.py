"""What the gateway adds to oauthenticator, shared by the EGI Check-in and CILogon authenticators.

oauthenticator does the protocol (authorization code flow with PKCE, token exchange, userinfo,
refresh with the refresh token) and the group policy mechanics (``manage_groups``,
``allowed_groups``, ``admin_groups``, ``auth_state_groups_key``). This base class adds only what
behaves differently on a federated research infrastructure:

- **OIDC discovery**: ``authorize_url``, ``token_url`` and ``userdata_url`` default to the
  endpoints in ``{oidc_issuer}/.well-known/openid-configuration`` (oauthenticator 17 reads none),
  fetched asynchronously with a timeout when the login page, a callback or a token refresh first
  needs them (:meth:`GatewayOAuthenticator.discover`); a failure is remembered for
  :attr:`~GatewayOAuthenticator.oidc_discovery_retry_interval` seconds, so a hung provider never
  stalls the hub's event loop and is asked at most that often.
- **Tokens that stay fresh**: ``auth_state`` records when the access token expires
  (``expires_at``), and :meth:`refresh_user` uses the refresh token as soon as the access token
  has less than :attr:`access_token_refresh_margin` seconds left, not only after it has expired.
  Servers read the fresh token from the hub API (see ``science_gateway.jupyter_ext.tokens``). A
  provider that does not answer a refresh (refused, timed out, HTTP 5xx) keeps the user logged in
  with the tokens they have, the refresh token too, until it answers again.
- **Safe usernames** from the configured claim (:func:`.entitlements.safe_username`), and a
  mapping to local unix accounts (:attr:`unix_account_map`, :attr:`unix_account_hook`), recorded
  in ``auth_state["unix_account"]`` for spawners that run jobs as local users (Slurm).
- **A 403 page that helps**: a refused user is told which memberships would let them in and how
  to request one (:attr:`membership_help_text`, :attr:`membership_help_url`).

Override ladder for a new provider module (increasing depth): ``@default`` values for traits;
:meth:`describe_group` (how a group is named in the refusal message); ``user_info_to_username``
(oauthenticator's hook). Do not override ``authenticate`` or ``refresh_user``.
"""

from __future__ import annotations

import asyncio
import json
import re
from html import escape
from inspect import isawaitable

from oauthenticator.oauth2 import OAuthenticator
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from traitlets import Callable, Dict, Float, Integer, Unicode, default

from ..core.clock import utcnow  # the one clock (tests patch it here)
from ..core.logs import scrub_library_logs
from ..core.metrics import hub_metrics
from ..core.text import quote_prefix
from .api import gateway_handlers
from .entitlements import safe_username

#: unix account names the mapping may produce (the same rule as :func:`safe_username`'s output)
UNIX_ACCOUNT = re.compile(r"^[a-z_][a-z0-9._-]{0,31}$")


class DiscoveryError(RuntimeError):
    """The issuer's discovery document could not be read (the message says why, without bodies)."""


async def fetch_discovery(issuer: str, timeout: float) -> dict:
    """GET ``{issuer}/.well-known/openid-configuration`` (asynchronously, at most ``timeout``
    seconds) and check it names ``issuer``."""
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    request = HTTPRequest(url, headers={"Accept": "application/json", "User-Agent": "JupyterHub"},
                          connect_timeout=timeout, request_timeout=timeout)
    try:
        response = await AsyncHTTPClient().fetch(request)
        document = json.loads(response.body)
    except asyncio.CancelledError:
        raise
    except Exception as e:  # noqa: BLE001 - timeouts, refused connections, HTTP errors, bad JSON
        raise DiscoveryError(f"OIDC discovery from {url} failed: {type(e).__name__}: {e}") from e
    if not isinstance(document, dict):
        raise DiscoveryError(f"OIDC discovery from {url} gave no JSON object")
    if str(document.get("issuer", "")).rstrip("/") != issuer.rstrip("/"):
        raise DiscoveryError(f"OIDC discovery from {url} names issuer {document.get('issuer')!r}, not {issuer!r}")
    return document


def provider_unreachable(error: BaseException) -> bool:
    """True for an error that means the provider did not answer (refused, timed out, 5xx), not
    that it refused the tokens (a 4xx, which needs a fresh login)."""
    if isinstance(error, HTTPClientError):
        return error.code == 599 or error.code >= 500
    return isinstance(error, (OSError, asyncio.TimeoutError))


def describe_provider_error(error: BaseException) -> str:
    """What a log line may say about it: the status line or the error's type, never a body."""
    if isinstance(error, HTTPClientError):
        return f"HTTP {error.code}: {quote_prefix(error.message or '', 80)}"
    return type(error).__name__


def unreachable_error(message: str) -> web.HTTPError:
    """The 503 page a user sees while the identity provider cannot be reached."""
    text = (f"The identity provider cannot be reached right now, so nobody can sign in. Try again in a "
            f"minute; if it persists, tell the gateway administrators. ({message})")
    error = web.HTTPError(503, reason="Identity provider unreachable")
    error.jupyterhub_message = text
    return error


class DiscoveringHandler:
    """Mixed in front of oauthenticator's login and callback handlers (whichever the provider
    uses): their ``get`` runs after the (asynchronous) discovery of the endpoints, and a user meets
    a 503 page saying the provider is unreachable instead of a hub that hangs."""

    async def get(self, *args, **kwargs):
        try:
            await self.authenticator.discover()
        except DiscoveryError as e:
            raise unreachable_error(str(e)) from None
        result = super().get(*args, **kwargs)
        if isawaitable(result):
            await result


def discovering(handler: type) -> type:
    """``handler`` with :class:`DiscoveringHandler` in front of it."""
    return type(f"Discovering{handler.__name__}", (DiscoveringHandler, handler), {})


class GatewayOAuthenticator(OAuthenticator):
    """Base of the gateway's OIDC authenticators (see the module docstring for what it adds)."""

    oidc_issuer = Unicode(
        "",
        config=True,
        help="""The identity provider's OIDC issuer URL, e.g. `https://aai.egi.eu/auth/realms/egi`.
        `authorize_url`, `token_url` and `userdata_url` default to the endpoints its
        `.well-known/openid-configuration` names (fetched once, when first needed). Set those
        three explicitly to skip discovery.""",
    )

    oidc_discovery_timeout = Float(
        10.0,
        config=True,
        help="Seconds to wait for the issuer's `.well-known/openid-configuration`.",
    )

    oidc_discovery_retry_interval = Float(
        30.0,
        config=True,
        help="""After a failed OIDC discovery, seconds during which the login page answers at once
        that the identity provider is unreachable, before the issuer is asked again.""",
    )

    oidc_discovery = Dict(
        help="""The issuer's discovery document (read from `oidc_issuer` by `discover()` when
        first needed; not config)."""
    )

    @default("oidc_discovery")
    def _oidc_discovery_default(self):
        # not cached: an access before discover() fails and a later one can succeed
        raise DiscoveryError(f"{type(self).__name__}: OIDC discovery of {self.oidc_issuer!r} has not completed")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._discovery_lock = asyncio.Lock()
        self._discovery_failure: tuple[float, str] | None = None
        #: user name -> when the identity provider last left a token refresh unanswered
        self._unanswered_refreshes: dict[str, float] = {}

    def needs_discovery(self) -> bool:
        """False when the three endpoints are configured (or already discovered)."""
        return "oidc_discovery" not in self._trait_values and not all(
            name in self._trait_values for name in ("authorize_url", "token_url", "userdata_url")
        )

    async def discover(self) -> None:
        """Read the issuer's discovery document once, asynchronously; :class:`DiscoveryError` if it
        cannot be read now (for :attr:`oidc_discovery_retry_interval` seconds after a failure, at
        once, without asking the issuer again)."""
        if not self.needs_discovery():
            return
        if not self.oidc_issuer:
            raise DiscoveryError(f"{type(self).__name__}.oidc_issuer is not set: OIDC discovery needs it")
        async with self._discovery_lock:  # one request at a time; the others wait for its answer
            if not self.needs_discovery():
                return
            if self._discovery_failure is not None:
                failed_at, message = self._discovery_failure
                if utcnow() - failed_at < self.oidc_discovery_retry_interval:
                    raise DiscoveryError(message)
            try:
                document = await fetch_discovery(self.oidc_issuer, self.oidc_discovery_timeout)
            except DiscoveryError as e:
                self._discovery_failure = (utcnow(), str(e))
                self.log.warning("%s (asking again in %.0fs at the earliest)", e, self.oidc_discovery_retry_interval)
                raise
            self._discovery_failure = None
            self.oidc_discovery = document
            self.log.info("OIDC discovery: issuer %s", document["issuer"])

    def _discovered(self, key: str) -> str:
        value = self.oidc_discovery.get(key)
        if not value:
            raise ValueError(f"{self.oidc_issuer} publishes no {key} in its discovery document")
        return value

    @default("authorize_url")
    def _authorize_url_default(self):
        return self._discovered("authorization_endpoint")

    @default("token_url")
    def _token_url_default(self):
        return self._discovered("token_endpoint")

    @default("userdata_url")
    def _userdata_url_default(self):
        return self._discovered("userinfo_endpoint")

    def get_handlers(self, app):
        scrub_library_logs()  # the hub's log lines without JupyterHub's XSRF cookie ids (core.logs)
        # oauthenticator's login and callback after discovery, then the gateway's hub API routes
        wrap = {self.login_handler, self.callback_handler}
        handlers = [(route, discovering(h) if h in wrap else h, *rest) for route, h, *rest in super().get_handlers(app)]
        return [*handlers, *gateway_handlers()]

    # --- tokens -------------------------------------------------------------------------------

    @default("enable_auth_state")
    def _enable_auth_state_default(self):
        # tokens are what servers need; JUPYTERHUB_CRYPT_KEY must be set (JupyterHub says so)
        return True

    @default("auth_refresh_age")
    def _auth_refresh_age_default(self):
        # well below the access token lifetime of Check-in (1 h) and CILogon (15 min)
        return 60

    access_token_refresh_margin = Integer(
        300,
        config=True,
        help="""Use the refresh token when the access token has less than this many seconds
        left (from `expires_in` of the token response), rather than waiting until it has
        expired. Keep `auth_refresh_age` < `TokenKeeper.refresh_margin` <= this margin < the
        provider's access token lifetime, so servers are never handed an expiring token.""",
    )

    async def authenticate(self, handler, data=None, **kwargs):
        await self.discover()  # the token and userinfo endpoints
        return await super().authenticate(handler, data, **kwargs)

    async def get_token_info(self, handler, params):
        """The token endpoint's answer, stamped with ``expires_at`` (epoch seconds) on arrival.

        The stamp lives in the token response itself, so re-reading a stored response (as
        ``refresh_user`` does while the access token still works) keeps the real expiry.
        """
        token_info = await super().get_token_info(handler, params)
        expires_in = token_info.get("expires_in")
        if isinstance(expires_in, (int, float)) and expires_in > 0:
            token_info["expires_at"] = int(utcnow() + expires_in)
        return token_info

    def build_auth_state_dict(self, token_info, user_info):
        auth_state = super().build_auth_state_dict(token_info, user_info)
        if isawaitable(auth_state):
            raise TypeError("GatewayOAuthenticator expects a synchronous build_auth_state_dict")
        if "expires_at" in token_info:
            auth_state["expires_at"] = token_info["expires_at"]
        # the provider has just vouched for these tokens (a login, a refresh, a userinfo check)
        auth_state["verified_at"] = int(utcnow())
        return auth_state

    def expires_soon(self, auth_state: dict) -> bool:
        """True when the access token in ``auth_state`` has less than the margin left."""
        expires_at = auth_state.get("expires_at")
        return isinstance(expires_at, (int, float)) and expires_at - utcnow() < self.access_token_refresh_margin

    def recently_verified(self, auth_state: dict) -> bool:
        """True when the provider vouched for ``auth_state``'s tokens less than ``auth_refresh_age``
        seconds ago (``verified_at``, stamped at every login and refresh)."""
        verified_at = auth_state.get("verified_at")
        return isinstance(verified_at, (int, float)) and 0 <= utcnow() - verified_at < self.auth_refresh_age

    async def refresh_user(self, user, handler=None, **kwargs):
        """oauthenticator's refresh, but refreshing tokens *before* they expire.

        oauthenticator uses the refresh token only once the access token is rejected, so a
        server would be handed a token that is about to expire. Here an access token within
        :attr:`access_token_refresh_margin` of its expiry is exchanged right away.

        Tokens the provider vouched for less than ``auth_refresh_age`` seconds ago (and not
        expiring) are kept without asking it again: JupyterHub forces a refresh before every
        spawn (``refresh_pre_spawn``), and right after a login that is one more userinfo call per
        user, which on the morning of a workshop (50 logins at once) queued in the hub and timed
        out, failing spawns with a 500.
        """
        try:
            await self.discover()
        except DiscoveryError:
            # the provider is unreachable: keep the current tokens; ask again next time
            hub_metrics().token_refresh_failures.labels("unreachable").inc()
            return True
        try:
            if self.enable_auth_state and self.refresh_user_hook is None:
                auth_state = await user.get_auth_state()
                if auth_state and auth_state.get("refresh_token") and self.expires_soon(auth_state):
                    auth_model = await self._refresh_tokens(user, auth_state, handler)
                    if auth_model:
                        return self._provider_answered(user, auth_model)
                elif auth_state and not self.expires_soon(auth_state) and self.recently_verified(auth_state):
                    return True
            # not due yet, or the early refresh failed: oauthenticator's own way (the current access
            # token while it works, then the refresh token, then a fresh login)
            return self._provider_answered(user, await super().refresh_user(user, handler, **kwargs))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - only an unreachable provider is kept from the hub
            if not provider_unreachable(e):
                raise
            # oauthenticator raises (its userinfo call) or asks for a fresh login (its refresh
            # call) when the provider does not answer: the hub would treat the user as logged
            # out while it lasts. The tokens in auth_state, the refresh token included, stay;
            # the refresh is tried again after auth_refresh_age.
            self._provider_unreachable(user, e)
            return True

    async def _refresh_tokens(self, user, auth_state, handler):
        self.log.info("Refreshing the access token of %s before it expires", user.name)
        params = self.build_refresh_token_request_params(auth_state["refresh_token"])
        try:
            token_info = await self.get_token_info(handler, params)
            if not token_info.get("refresh_token"):
                token_info["refresh_token"] = auth_state["refresh_token"]
            # the same path as a login: userinfo, username, auth_state, groups, admin
            return await self._token_to_auth_model(token_info)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 (any other failure: fall back to oauthenticator's refresh)
            if provider_unreachable(e):
                raise
            # only the exception's type: its text could quote a provider's response
            self.log.warning("Early token refresh for %s failed (%s)", user.name, type(e).__name__)
            hub_metrics().token_refresh_failures.labels("refused").inc()
            return None

    def _provider_unreachable(self, user, error: Exception) -> None:
        """Say once per outage and user that the refresh waits for the provider (no token values)."""
        first = user.name not in self._unanswered_refreshes
        self._unanswered_refreshes[user.name] = utcnow()
        hub_metrics().token_refresh_failures.labels("unreachable").inc()
        (self.log.warning if first else self.log.debug)(
            "The identity provider did not answer the token refresh of %s (%s): keeping the current "
            "tokens (the refresh token too), the user stays logged in; trying again in %ss",
            user.name, describe_provider_error(error), self.auth_refresh_age,
        )

    def _provider_answered(self, user, result):
        if result is False:  # oauthenticator could not refresh: the user must log in again
            hub_metrics().token_refresh_failures.labels("refused").inc()
        since = self._unanswered_refreshes.pop(user.name, None)
        if since is not None and result:
            self.log.info("The identity provider answers the token refresh of %s again", user.name)
        return result

    # --- usernames and unix accounts ----------------------------------------------------------

    username_max_length = Integer(
        32,
        config=True,
        help="""Longest hub username. Longer names from the username claim are cut and end in
        8 hex digits of a hash of the whole name (32 is the usual limit of unix accounts).""",
    )

    def normalize_username(self, username):
        """The claim's value made safe: lower-case `[a-z][a-z0-9._-]*`, see `safe_username`."""
        return super().normalize_username(safe_username(username, self.username_max_length))

    unix_account_map = Dict(
        key_trait=Unicode(),
        value_trait=Unicode(),
        config=True,
        help="""Local unix account of each hub user, by hub username, for spawners that run
        jobs as local users (Slurm). Users not listed use their hub username, unless
        `unix_account_hook` says otherwise. The result is stored as `auth_state["unix_account"]`
        at every login and token refresh, e.g. `{"alice.astro-egi.eu": "alice"}`.""",
    )

    unix_account_hook = Callable(
        None,
        allow_none=True,
        config=True,
        help="""A function `(authenticator, hub_username, auth_state) -> str | None` returning
        the local unix account of a user (None: fall back to `unix_account_map`, then to the
        hub username). Use it to look accounts up in a site directory. It must return a valid
        unix account name; the user is refused otherwise.""",
    )

    def unix_account(self, username: str, auth_state: dict) -> str:
        """The local account for ``username``: the hook, then the map, then the name itself."""
        account = None
        if self.unix_account_hook is not None:
            account = self.unix_account_hook(self, username, auth_state)
        if account is None:
            account = self.unix_account_map.get(username, username)
        if not UNIX_ACCOUNT.fullmatch(account):
            raise web.HTTPError(403, f"No valid local account for {username}; ask the gateway administrators.")
        return account

    async def update_auth_model(self, auth_model):
        auth_model = await super().update_auth_model(auth_model)
        auth_state = auth_model["auth_state"]
        auth_state["unix_account"] = self.unix_account(auth_model["name"], auth_state)
        return auth_model

    # --- the 403 page -------------------------------------------------------------------------

    membership_help_text = Unicode(
        "To request membership, ask the manager of your virtual organisation (VO), "
        "then sign in again.",
        config=True,
        help="""Shown to a user who signed in but may not use the gateway, after the list of
        memberships that would let them in: say how to request membership.""",
    )

    membership_help_url = Unicode(
        "",
        config=True,
        help="""A link shown with `membership_help_text`, e.g. the VO's enrolment page.""",
    )

    def describe_group(self, group: str) -> str:
        """How the refusal message names a group a user would need (subclasses show URNs)."""
        return group

    def refusal_message(self, username: str, auth_model: dict) -> str:
        """The plain text of the 403 page for a user no allow rule admits."""
        needed = sorted(self.allowed_groups | self.admin_groups)
        if needed:
            wanted = ", ".join(self.describe_group(g) for g in needed)
            text = f"{username} is not a member of a group allowed on this gateway. Membership needed (any one of): {wanted}."
        else:
            text = f"{username} is not allowed on this gateway."
        return f"{text} {self.membership_help_text}"

    async def check_allowed(self, username, auth_model):
        """oauthenticator's rules (``allowed_groups``, ``admin_groups``, ...), with a helpful 403."""
        if await super().check_allowed(username, auth_model):
            return True
        groups = sorted(auth_model.get("groups") or []) if auth_model else []
        self.log.warning("Refusing %s: groups %s give no access", username, groups)
        message = self.refusal_message(username, auth_model)
        # no log_message: tornado would log it with the callback URL, authorization code and all
        error = web.HTTPError(403, reason="Membership required")
        html = escape(message)
        if self.membership_help_url:
            url = escape(self.membership_help_url, quote=True)
            html += f' <a href="{url}" id="membership-help">{url}</a>'
        error.jupyterhub_html_message = html
        error.jupyterhub_message = message
        raise error
