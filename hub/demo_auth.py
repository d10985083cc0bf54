"""The embedded default's local login: a small table of users with hashed passwords and groups.

It is a convenience for a first run and for tests on loopback, not a production authenticator:
production gateways log in through EGI Check-in or CILogon (OIDC).
"""

import asyncio
from concurrent.futures import ThreadPoolExecutor

from jupyterhub.auth import Authenticator
from traitlets import Bool, Dict, HasTraits, Integer, List, TraitError, Unicode, default, validate

from ..core.logs import scrub_library_logs
from .api import gateway_handlers
from .passwords import is_password_hash, verify_password


class DemoUser(HasTraits):
    """One entry of :attr:`DemoAuthenticator.users`."""

    password = Unicode(help="Salted hash from `science-gateway-hash-password`.")
    groups = List(Unicode(), help="JupyterHub groups the user belongs to (they drive the group policy).")
    admin = Bool(False, help="Whether the user is a JupyterHub admin.")

    @validate("password")
    def _valid_hash(self, proposal):
        if not is_password_hash(proposal.value):
            raise TraitError(
                "a demo user's password must be a hash: run `science-gateway-hash-password` "
                "and paste its output"
            )
        return proposal.value


class DemoAuthenticator(Authenticator):
    """Local login against :attr:`users`, with groups and admin flags taken from the same table."""

    users = Dict(
        help="""
        Users who may log in, by username::

            {"demo": {"password": "pbkdf2_sha256$...", "groups": ["astro"], "admin": False}}

        `password` is a salted hash made by `science-gateway-hash-password` (plain text is
        refused). `groups` become JupyterHub groups at every login; `admin` makes the user an admin.
        """,
    ).tag(config=True)

    @validate("users")
    def _build_users(self, proposal):
        built = {}
        for name, entry in proposal.value.items():
            if isinstance(entry, DemoUser):
                built[name] = entry
                continue
            unknown = set(entry) - set(DemoUser.class_trait_names())
            if unknown:
                raise TraitError(f"DemoAuthenticator.users[{name!r}]: unknown keys {sorted(unknown)}")
            built[name] = DemoUser(**entry)
        return built

    verify_workers = Integer(
        2,
        min=1,
        help="""Threads that check passwords. A check (PBKDF2) takes a fraction of a second of
        CPU: it runs on these threads, never on the hub's event loop, so a burst of wrong
        passwords queues here instead of stalling every other request to the hub.""",
    ).tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._verifier = ThreadPoolExecutor(self.verify_workers, thread_name_prefix="demo-login")

    @default("manage_groups")
    def _manage_groups_default(self):
        return True

    @default("allow_all")
    def _allow_all_default(self):
        # Only users in the table can authenticate at all.
        return True

    def get_handlers(self, app):
        scrub_library_logs()  # the hub's log lines without JupyterHub's XSRF cookie ids (core.logs)
        # the gateway's hub API routes (token, effective policy), see .api
        return [*super().get_handlers(app), *gateway_handlers()]

    async def authenticate(self, handler, data):
        name = self.normalize_username(data.get("username", ""))
        user = self.users.get(name)
        password = data.get("password", "")
        ok = user is not None and await asyncio.get_running_loop().run_in_executor(
            self._verifier, verify_password, password, user.password
        )
        if not ok:
            self.log.warning("Demo login refused for %r", name)
            return None
        return {"name": name, "admin": user.admin, "groups": list(user.groups)}
