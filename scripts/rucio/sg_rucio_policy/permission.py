"""Generic permissions, plus: the owner of a replication rule may delete it or change its lifetime
(as the policies of most experiments allow), so a user can cancel their own stage-in requests."""

from rucio.core.permission import generic
from rucio.core.rule import get_rule


def _owns(issuer, kwargs, session):
    return get_rule(kwargs["rule_id"], session=session)["account"] == issuer


def has_permission(issuer, action, kwargs, session):
    if generic.has_permission(issuer, action, kwargs, session=session):
        return True
    if action == "del_rule":
        return _owns(issuer, kwargs, session)
    if action == "update_rule" and set(kwargs.get("options") or {}) == {"lifetime"}:
        return _owns(issuer, kwargs, session)
    return False
