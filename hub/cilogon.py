"""Login with CILogon: CILogonOAuthenticator, with groups from ``isMemberOf``.

CILogon (and COmanage behind it) lists group memberships in the ``isMemberOf`` claim; each value
becomes a JupyterHub group as it is. Usernames follow oauthenticator's per-IdP ``idps`` config
(``username_derivation``), then :func:`.entitlements.safe_username`. See docs/authentication.md.
"""

from oauthenticator.cilogon import CILogonOAuthenticator as BaseCILogonOAuthenticator
from traitlets import default

from .oauth import GatewayOAuthenticator


class CILogonAuthenticator(GatewayOAuthenticator, BaseCILogonOAuthenticator):
    """CILogon (OIDC) with group membership from ``isMemberOf``."""

    @default("oidc_issuer")
    def _oidc_issuer_default(self):
        return f"https://{self.cilogon_host}"

    @default("manage_groups")
    def _manage_groups_default(self):
        return True

    @default("auth_state_groups_key")
    def _auth_state_groups_key_default(self):
        return f"{self.user_auth_state_key}.isMemberOf"
