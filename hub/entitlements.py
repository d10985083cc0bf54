"""Pure helpers for federated identities: entitlement URNs to groups, safe usernames.

No I/O here: the authenticators in :mod:`.oauth`, :mod:`.checkin` and :mod:`.cilogon` call these
with values from the identity provider's userinfo, and the unit tests call them with tables.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote

#: EGI Check-in group entitlements start with this (AARC-G002)
EGI_GROUP_PREFIX = "urn:mace:egi.eu:group:"
#: the role a plain VO member holds; it adds nothing to the group name
MEMBER_ROLE = "member"


@dataclass(frozen=True)
class Entitlement:
    """One parsed ``<prefix><group>[:<subgroup>...][:role=<role>]#<authority>`` URN."""

    path: tuple[str, ...]
    role: str
    authority: str

    @property
    def group(self) -> str:
        """The JupyterHub group name: ``vo[:sub...]``, plus ``:role=<role>`` unless a member.

        ``urn:mace:egi.eu:group:vo.example:role=member#aai.egi.eu`` -> ``vo.example``;
        ``urn:mace:egi.eu:group:vo.example:analysis:role=member#...`` -> ``vo.example:analysis``;
        ``urn:mace:egi.eu:group:vo.example:role=admin#...`` -> ``vo.example:role=admin``.
        """
        name = ":".join(self.path)
        return name if self.role == MEMBER_ROLE else f"{name}:role={self.role}"


def parse_entitlement(urn: str, prefix: str = EGI_GROUP_PREFIX) -> Entitlement | None:
    """Parse one entitlement URN; None for anything that is not a well-formed group entitlement.

    Segments are percent-decoded (Check-in encodes spaces and other characters). The prefix is
    compared case-insensitively (URN namespace identifiers are), the rest case-sensitively.
    """
    if not isinstance(urn, str) or not urn[: len(prefix)].lower() == prefix.lower():
        return None
    body, sep, authority = urn[len(prefix) :].partition("#")
    authority = unquote(authority).strip()
    if not sep or not authority:
        return None
    segments = [unquote(s) for s in body.split(":")]
    role = MEMBER_ROLE
    if segments and segments[-1].startswith("role="):
        role = segments.pop()[len("role=") :]
    if not role or not segments or any(not s or s.startswith("role=") for s in segments):
        return None
    return Entitlement(path=tuple(segments), role=role, authority=authority)


def entitlement_groups(urns, authorities, prefix: str = EGI_GROUP_PREFIX) -> set[str]:
    """The JupyterHub groups of a user's entitlements, counting only the listed ``authorities``.

    Entitlements from any other authority, and malformed ones, are ignored: an authority the
    gateway does not trust cannot grant membership or admin rights.
    """
    if isinstance(urns, str):
        urns = [urns]
    trusted = set(authorities)
    groups = set()
    for urn in urns or ():
        ent = parse_entitlement(urn, prefix)
        if ent is not None and ent.authority in trusted:
            groups.add(ent.group)
    return groups


def entitlement_urn(group: str, authority: str, prefix: str = EGI_GROUP_PREFIX) -> str:
    """The entitlement URN that :attr:`Entitlement.group` maps to ``group`` (for messages)."""
    if ":role=" not in group:
        group = f"{group}:role={MEMBER_ROLE}"
    return f"{prefix}{group}#{authority}"


_INVALID = re.compile(r"[^a-z0-9._-]+")


def safe_username(value: str, max_length: int = 32) -> str:
    """A stable name safe for URLs, unix accounts and Slurm: ``[a-z][a-z0-9._-]*``, at most ``max_length``.

    Letters are folded to lower-case ASCII; every run of other characters becomes ``-``; a name
    that does not start with a letter gets a ``u`` in front. A name longer than ``max_length`` is
    cut and ends with 8 hex digits of a hash of the whole value, so distinct long names stay
    distinct. The function is idempotent: ``safe_username(safe_username(x)) == safe_username(x)``.
    """
    if max_length < 10:
        raise ValueError("max_length must be at least 10")
    folded = unicodedata.normalize("NFKD", str(value)).encode("ascii", "ignore").decode().lower()
    name = _INVALID.sub("-", folded).strip("-._")
    if not name:
        raise ValueError(f"no usable characters in username {value!r}")
    if not name[0].isalpha():
        name = f"u{name}"
    if len(name) > max_length:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[: max_length - 9].rstrip('-._')}-{digest}"
    return name
