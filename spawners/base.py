"""What every Science Gateway spawner does, whatever the scheduler: policy, identity, unix account.

:class:`PolicySpawnerMixin` is what all our spawners share (Slurm, HTCondor and
Kubernetes). It is a mixin listed before a JupyterHub ``Spawner`` class (``class S(PolicySpawnerMixin,
batchspawner.SlurmSpawner)``; a mixin, because JupyterHub refuses a ``Spawner`` subclass that
does not define ``stop`` and ``poll``) and puts in front of the scheduler backend:

- **The group resource policy** (:class:`~science_gateway.core.policy.ResourcePolicy`):
  ``options_form`` shows only what the user's groups allow, ``options_from_form`` and
  ``options_from_query`` parse form posts and spawn URLs, ``apply_user_options`` validates every
  ``user_options`` (form, URL or REST API), and :meth:`start` validates again before the backend
  runs anything. Policy errors are HTTP 400 (403 when none of the user's groups may start servers)
  with a message that says what is allowed.
- **Allocations** (Slurm accounting, :class:`~science_gateway.core.accounting.SlurmAccounting`,
  when enabled): the form shows the user's usage and what is left of each account they may charge,
  and the policy check refuses a spent allocation or an account the scheduler does not associate
  with the user, with the reason. Every check reads the one cached snapshot of the hub process
  (refreshed, when stale, before a form is shown and before each spawn is checked).
- **The job's identity**: the first of :attr:`identity_keys` in the user's ``auth_state`` (the
  federated identity, for the job's accounting comment or labels), else the hub username.
- **The user's unix account**: ``auth_state["unix_account"]`` as the authenticator recorded it
  (``science_gateway.hub.oauth``), else the hub username (e.g. the demo login). It must exist, be a
  plain unix name and have a uid of at least :attr:`min_uid` (so never ``root`` or ``daemon``):
  otherwise the spawn fails with HTTP 403 before any command runs. The account a job was started
  for is kept in the spawner's state (:attr:`job_account`), so a stop after a hub restart acts as
  the same account.

Override ladder (subclasses, in increasing depth):

1. the traits (``@default`` for a backend's own defaults);
2. :meth:`job_identity`, :meth:`render_options_form`, :meth:`unix_account_name` (which account a
   job runs as) and :meth:`account_entry` (where that account's entry comes from: the hub's
   passwd by default; e.g. a container image's fixed user on Kubernetes). The floor
   (:attr:`min_uid`) applies to whatever entry it returns;
3. :meth:`start_job` (**required**): start the backend's job for a request that is already
   validated, as an account that is already checked; return ``(ip, port)`` like ``start``.

Do not override :meth:`start`: it is the template that validates and then calls :meth:`start_job`,
so no backend can skip the policy or the account floor. A backend built on another library's
spawner (batchspawner, KubeSpawner) lists this class first (``class S(PolicySpawnerMixin,
KubeSpawner)``), implements ``stop`` and ``poll`` (or inherits the library's) and calls the
library's ``start`` from :meth:`start_job` when it needs it (``await KubeSpawner.start(self)``).
"""

from __future__ import annotations

import pwd
from contextlib import contextmanager
from inspect import isawaitable

from jupyterhub.spawner import SpawnException
from sqlalchemy.orm import object_session
from tornado import web
from traitlets import HasTraits, Instance, Integer, List, Unicode, default

from ..core.accounting import SlurmAccounting, UsageSnapshot, shared_accounting
from ..core.metrics import FAILURE, REFUSED_OPTIONS, SUCCESS, hub_metrics
from ..core.names import is_unix_name
from ..core.policy import PolicyError, ResourcePolicy, ResourceRequest
from ..core.text import quote_prefix
from .form import form_fields, options_from_form_data, render_form

#: the ``auth_state`` key where the authenticator records the user's unix account
UNIX_ACCOUNT_KEY = "unix_account"


def forget_user_options(spawner) -> None:
    """Drop the options of a refused request: JupyterHub saved them as the user's defaults for the
    next spawn (and serves them back in the user's model) before any hook could refuse them."""
    spawner.user_options = {}
    spawner.orm_spawner.user_options = {}
    object_session(spawner.orm_spawner).commit()


#: SpawnException reasons that mean "the request was refused", not "the spawn failed"
REFUSED_REASONS = ("resource_policy", "user_options", "unix_account")


class RefusedOptionsMixin(HasTraits):
    """How every gateway spawner runs its ``apply_user_options`` hook: a refusal (a
    :class:`SpawnException`, e.g. out of policy) is one log line, not a traceback, and the refused
    options are not kept. JupyterHub's own runner (``Spawner._run_apply_user_options``, JupyterHub
    5.3+) logs every refusal with a traceback ("Exception applying user_options") and keeps the
    options as the user's defaults for the next spawn; listed before the JupyterHub ``Spawner``
    class, this replaces it. Other exceptions are handled as JupyterHub does (a traceback, 400).

    It also counts every spawn in ``science_gateway_spawns_total{backend, outcome}`` (the hub's
    ``/hub/metrics``, :mod:`science_gateway.core.metrics`): a refusal here, and each ``start``
    inside :meth:`counting_spawn`. The outcome is the spawner's: ``success`` when ``start``
    returned (JupyterHub then still waits for the server to answer; its own
    ``jupyterhub_server_spawn_duration_seconds`` counts that), ``refused-options`` for a request
    refused before anything ran (policy, options, account), else ``failure``."""

    #: the ``backend`` label of this spawner's metrics
    metrics_backend = "unknown"

    @contextmanager
    def counting_spawn(self):
        """Count the start run inside this block by its outcome (see the class docstring)."""
        metrics = hub_metrics()
        try:
            yield
        except SpawnException as e:
            refused = getattr(e, "reason", "") in REFUSED_REASONS
            metrics.spawns.labels(self.metrics_backend, REFUSED_OPTIONS if refused else FAILURE).inc()
            raise
        except BaseException:
            metrics.spawns.labels(self.metrics_backend, FAILURE).inc()
            raise
        else:
            metrics.spawns.labels(self.metrics_backend, SUCCESS).inc()

    def observe_queue_wait(self, seconds: float) -> None:
        """One server's wait in the scheduler's queue (submission to running)."""
        hub_metrics().queue_wait.labels(self.metrics_backend).observe(max(seconds, 0.0))

    async def _run_apply_user_options(self, user_options):
        hook = self.apply_user_options
        if not callable(hook) or isinstance(hook, dict):
            return await super()._run_apply_user_options(user_options)
        try:
            result = hook(self, user_options)
            if isawaitable(result):
                await result
        except SpawnException:
            forget_user_options(self)
            # JupyterHub does not call start() for these: counted here
            hub_metrics().spawns.labels(self.metrics_backend, REFUSED_OPTIONS).inc()
            raise
        except Exception:
            self.log.exception("Exception applying user_options for %s", self._log_name)
            raise web.HTTPError(400, "Invalid user options") from None


class PolicySpawnerMixin(RefusedOptionsMixin):
    """Makes a Spawner check every start against the group policy and the account floor."""

    policy = Instance(ResourcePolicy, help="The group resource policy (configured as ResourcePolicy).")

    @default("policy")
    def _policy_default(self):
        return ResourcePolicy(parent=self)

    identity_keys = List(
        Unicode(),
        ["voperson_id", "eduperson_principal_name", "sub"],
        help="""
        auth_state keys (looked up at the top level and under ``oauth_user``) whose first value is
        the user's federated identity for the job (e.g. Slurm's --comment). Falls back to the hub
        username.
        """,
    ).tag(config=True)

    min_uid = Integer(
        1000,
        help="""
        Lowest uid a job may run as. Accounts below it (``root``, ``daemon`` and the other system
        accounts) are refused with HTTP 403 before any command runs, whatever the authenticator
        mapped the user to.
        """,
    ).tag(config=True)

    accounting = Instance(
        SlurmAccounting,
        allow_none=True,
        help="The hub's Slurm accounting view (configured as SlurmAccounting; None while it is not enabled).",
    )

    @default("accounting")
    def _accounting_default(self):
        accounting = shared_accounting(parent=self)
        return accounting if accounting.enabled else None

    resource_request = Instance(
        ResourceRequest, allow_none=True, help="The validated request of the current spawn."
    )

    auth_identity = Unicode("", help="The federated identity found in auth_state at the last spawn.")
    auth_unix_account = Unicode("", help="auth_state['unix_account'] at the last spawn ('' when absent).")
    job_account = Unicode("", help="The unix account the current job was started as (kept in the state).")

    # -- defaults of JupyterHub's traits ------------------------------------------------------

    @default("options_form")
    def _options_form_default(self):
        return _policy_options_form

    @default("options_from_form")
    def _options_from_form_default(self):
        return options_from_form_data

    @default("apply_user_options")
    def _apply_user_options_default(self):
        return _apply_policy

    def options_from_query(self, query_data):
        return options_from_form_data(query_data)

    # -- policy -------------------------------------------------------------------------------

    def user_groups(self) -> list[str]:
        return sorted(g.name for g in self.user.groups)

    def usage_snapshot(self) -> UsageSnapshot | None:
        """The accounting snapshot last taken (no query), or None (no accounting, or none yet)."""
        return self.accounting.cached() if self.accounting is not None else None

    async def refresh_usage(self) -> None:
        """Make the cached accounting snapshot current (one query for all users when it is stale)."""
        if self.accounting is not None:
            await self.accounting.snapshot()

    def allocations(self) -> dict | None:
        """``{account: AllocationStatus}`` of the accounts this user may charge, from the cached
        snapshot, for the job's unix account; None without accounting (nothing is refused then)."""
        snapshot = self.usage_snapshot()
        if snapshot is None:
            return None
        accounts = self.policy.choices(self.user_groups()).accounts
        return snapshot.allocations(self.job_account or self.unix_account_name(), accounts)

    def validated_request(self, options) -> ResourceRequest:
        """``options`` checked against the policy for this user's groups (and allocations), or a
        4xx SpawnException."""
        groups = self.user_groups()
        try:
            return self.policy.validate(groups, options, allocations=self.allocations())
        except PolicyError as e:
            status = 403 if not self.policy.choices(groups).partitions else 400
            raise SpawnException(str(e), reason="resource_policy", status_code=status) from None

    def render_options_form(self, preselect: dict | None = None) -> str:
        """The spawn form, showing the user's last request (when still allowed) or the defaults;
        ``preselect`` (a launch link's checked choices) overrides them."""
        groups = self.user_groups()
        choices = self.policy.choices(groups)
        if not choices.partitions:
            return (
                "<p>None of your groups may start a server on this gateway's cluster. "
                "Ask the gateway admins to add your group to the resource policy.</p>"
            )
        allocations = self.allocations()
        current = self.policy.default_request(groups)
        preselect = dict(preselect or {})
        for candidate in (preselect, {**dict(self.user_options or {}), **preselect}):
            try:
                current = self.policy.validate(groups, candidate, allocations=allocations)
            except PolicyError:
                break
        snapshot = self.usage_snapshot()
        usage = None
        if snapshot is not None:
            usage = {"since": snapshot.start, "as_of": snapshot.end.replace("T", " "),
                     **snapshot.user_usage(self.job_account or self.unix_account_name())}
        return render_form(choices, current, allocations=allocations, usage=usage)

    def form_fields(self) -> tuple[str, ...]:
        """The choices the spawn form offers this user (a launch link that makes them all spawns
        without the form)."""
        return form_fields(self.policy.choices(self.user_groups()))

    # -- identity and account -------------------------------------------------------------------

    async def run_auth_state_hook(self, auth_state):
        auth_state = auth_state if isinstance(auth_state, dict) else {}
        self.auth_identity = self._identity_from(auth_state)
        account = auth_state.get(UNIX_ACCOUNT_KEY)
        self.auth_unix_account = account if isinstance(account, str) else ""
        await super().run_auth_state_hook(auth_state)

    def _identity_from(self, auth_state: dict) -> str:
        for source in (auth_state, auth_state.get("oauth_user") or {}):
            for key in self.identity_keys:
                value = source.get(key) if isinstance(source, dict) else None
                if isinstance(value, str) and value:
                    return value
        return ""

    def job_identity(self) -> str:
        """Who the job is for: the federated identity, else the username."""
        return self.auth_identity or self.user.name

    def unix_account_name(self) -> str:
        """The account a new job runs as: auth_state's ``unix_account``, else the hub username."""
        return self.auth_unix_account or self.user.name

    def account_entry(self, name: str) -> pwd.struct_passwd:
        """The passwd entry of the account ``name`` (KeyError: there is none). Default: the hub's
        passwd, right when jobs run on machines that share it (Slurm). :meth:`checked_account`
        applies the name check and the :attr:`min_uid` floor to what this returns."""
        return pwd.getpwnam(name)

    def checked_account(self, name: str) -> pwd.struct_passwd:
        """The passwd entry of ``name``, or a 403 SpawnException: not a plain unix name, no such
        account, or a system account (uid below :attr:`min_uid`)."""
        if not is_unix_name(name):
            raise SpawnException(
                f"the unix account {quote_prefix(name)} of {self.user.name} is not a plain unix name; "
                "ask the gateway admins to fix the account mapping",
                reason="unix_account",
                status_code=403,
            )
        try:
            account = self.account_entry(name)
        except KeyError:
            raise SpawnException(
                f"there is no unix account {name!r} on the cluster; ask the site admins to create it",
                reason="unix_account",
                status_code=403,
            ) from None
        if account.pw_uid < self.min_uid:
            raise SpawnException(
                f"the unix account {name!r} is a system account (uid {account.pw_uid} is below "
                f"{self.min_uid}); servers never run as system accounts: ask the gateway admins to map "
                f"{self.user.name} to a personal account",
                reason="unix_account",
                status_code=403,
            )
        return account

    def unix_account(self) -> pwd.struct_passwd:
        """The checked account of the current job (or, with no job, of the next one)."""
        return self.checked_account(self.job_account or self.unix_account_name())

    # -- the template -----------------------------------------------------------------------

    async def start(self):
        """Validate the request and the account, then :meth:`start_job` (counted in the hub's
        metrics by outcome). Do not override."""
        with self.counting_spawn():
            await self.refresh_usage()
            request = self.validated_request(dict(self.user_options or {}))
            self.resource_request = request
            account = self.checked_account(self.unix_account_name())
            self.job_account = account.pw_name
            return await self.start_job(request, account)

    async def start_job(self, request: ResourceRequest, account: pwd.struct_passwd):
        """Start the backend's job; return ``(ip, port)``. Subclasses must implement it."""
        raise NotImplementedError(f"{type(self).__name__} must implement start_job")

    # -- state ---------------------------------------------------------------------------------

    def get_state(self):
        state = super().get_state()
        if self.job_account:
            state["job_account"] = self.job_account
        return state

    def load_state(self, state):
        super().load_state(state)
        self.job_account = state.get("job_account", "")

    def clear_state(self):
        super().clear_state()
        self.resource_request = None
        self.job_account = ""


def _policy_options_form(spawner):
    if spawner.accounting is None:
        return spawner.render_options_form()

    async def with_usage():
        await spawner.refresh_usage()
        return spawner.render_options_form()

    return with_usage()


def _apply_policy(spawner, user_options):
    if spawner.accounting is None:
        return _check_options(spawner, user_options)

    async def with_usage():
        await spawner.refresh_usage()
        _check_options(spawner, user_options)

    return with_usage()


def _check_options(spawner, user_options):
    spawner.resource_request = spawner.validated_request(dict(user_options or {}))
    spawner.checked_account(spawner.unix_account_name())  # a refused account fails the request at once
