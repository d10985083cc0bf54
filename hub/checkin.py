"""Login with EGI Check-in: GenericOAuthenticator, configured for Check-in's claims.

Groups come from the ``eduperson_entitlement`` claim: each URN
``urn:mace:egi.eu:group:<vo>[:<subgroup>...][:role=<role>]#<authority>`` from one of
:attr:`CheckinAuthenticator.entitlement_authorities` becomes a JupyterHub group (``<vo>``,
``<vo>:<subgroup>``, ``<vo>:role=<role>``, see :class:`.entitlements.Entitlement`). Who may log in
and who is admin are oauthenticator's own ``allowed_groups`` and ``admin_groups``. See
docs/authentication.md for a site config.
"""

from oauthenticator.generic import GenericOAuthenticator
from traitlets import Set, Unicode, default

from .entitlements import EGI_GROUP_PREFIX, entitlement_groups, entitlement_urn
from .oauth import GatewayOAuthenticator


class CheckinAuthenticator(GatewayOAuthenticator, GenericOAuthenticator):
    """EGI Check-in (OIDC) with VO membership from entitlements."""

    @default("login_service")
    def _login_service_default(self):
        return "EGI Check-in"

    @default("oidc_issuer")
    def _oidc_issuer_default(self):
        return "https://aai.egi.eu/auth/realms/egi"

    @default("scope")
    def _scope_default(self):
        return ["openid", "profile", "email", "eduperson_entitlement", "voperson_id", "offline_access"]

    @default("username_claim")
    def _username_claim_default(self):
        # Check-in's stable, non-reassignable identifier (`<opaque>@egi.eu`)
        return "voperson_id"

    @default("manage_groups")
    def _manage_groups_default(self):
        return True

    entitlement_claim = Unicode(
        "eduperson_entitlement",
        config=True,
        help="The userinfo claim that lists the user's entitlement URNs.",
    )

    entitlement_prefix = Unicode(
        EGI_GROUP_PREFIX,
        config=True,
        help="""Only entitlements starting with this namespace are group memberships
        (`urn:mace:egi.eu:group:` for EGI Check-in).""",
    )

    entitlement_authorities = Set(
        Unicode(),
        default_value={"aai.egi.eu"},
        config=True,
        help="""The authorities (the part after `#` of an entitlement URN) whose group
        memberships count. Entitlements from any other authority are ignored: they give neither
        access nor admin rights.""",
    )

    @default("auth_state_groups_key")
    def _auth_state_groups_key_default(self):
        return self.groups_from_auth_state

    def groups_from_auth_state(self, auth_state: dict) -> set[str]:
        """JupyterHub groups from the entitlements in the userinfo stored in ``auth_state``."""
        user_info = auth_state.get(self.user_auth_state_key) or {}
        return entitlement_groups(user_info.get(self.entitlement_claim, []), self.entitlement_authorities, self.entitlement_prefix)

    def describe_group(self, group):
        authority = min(self.entitlement_authorities, default="")
        return f"{group} (entitlement {entitlement_urn(group, authority, self.entitlement_prefix)})"
