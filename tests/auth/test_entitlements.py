"""Entitlement URNs to groups, and safe usernames: pure functions, tables of cases."""

import pytest

from science_gateway.hub.entitlements import (
    Entitlement,
    entitlement_groups,
    entitlement_urn,
    parse_entitlement,
    safe_username,
)

EGI = "aai.egi.eu"

PARSE = [
    ("member", f"urn:mace:egi.eu:group:vo.example.org:role=member#{EGI}", Entitlement(("vo.example.org",), "member", EGI)),
    ("no-role-is-member", f"urn:mace:egi.eu:group:vo.example.org#{EGI}", Entitlement(("vo.example.org",), "member", EGI)),
    ("subgroup", f"urn:mace:egi.eu:group:vo.example.org:analysis:role=member#{EGI}", Entitlement(("vo.example.org", "analysis"), "member", EGI)),
    ("nested", f"urn:mace:egi.eu:group:vo:a:b:role=vm_operator#{EGI}", Entitlement(("vo", "a", "b"), "vm_operator", EGI)),
    ("percent-encoded", f"urn:mace:egi.eu:group:My%20VO:role=member#{EGI}", Entitlement(("My VO",), "member", EGI)),
    ("prefix-case", f"URN:MACE:EGI.EU:GROUP:vo:role=admin#{EGI}", Entitlement(("vo",), "admin", EGI)),
    ("other-authority", "urn:mace:egi.eu:group:vo:role=member#rogue.example", Entitlement(("vo",), "member", "rogue.example")),
    ("no-authority", "urn:mace:egi.eu:group:vo:role=member", None),
    ("empty-authority", "urn:mace:egi.eu:group:vo:role=member#", None),
    ("other-namespace", f"urn:mace:example.org:group:vo:role=member#{EGI}", None),
    ("not-a-group", f"urn:mace:egi.eu:res:rcauth#{EGI}", None),
    ("empty-role", f"urn:mace:egi.eu:group:vo:role=#{EGI}", None),
    ("only-role", f"urn:mace:egi.eu:group:role=member#{EGI}", None),
    ("empty-segment", f"urn:mace:egi.eu:group:vo::sub:role=member#{EGI}", None),
    ("not-a-string", None, None),
]


@pytest.mark.parametrize(("urn", "expected"), [c[1:] for c in PARSE], ids=[c[0] for c in PARSE])
def test_parse_entitlement(urn, expected):
    assert parse_entitlement(urn) == expected


GROUP = [
    ("member", Entitlement(("vo",), "member", EGI), "vo"),
    ("subgroup", Entitlement(("vo", "analysis"), "member", EGI), "vo:analysis"),
    ("role", Entitlement(("vo",), "admin", EGI), "vo:role=admin"),
]


@pytest.mark.parametrize(("entitlement", "group"), [c[1:] for c in GROUP], ids=[c[0] for c in GROUP])
def test_group_name_round_trips_to_urn(entitlement, group):
    assert entitlement.group == group
    assert parse_entitlement(entitlement_urn(group, EGI)).group == group


def test_only_listed_authorities_count():
    urns = [
        f"urn:mace:egi.eu:group:vo.astro:role=member#{EGI}",
        f"urn:mace:egi.eu:group:vo.astro:analysis:role=member#{EGI}",
        "urn:mace:egi.eu:group:vo.gateway:role=admin#rogue.example",
        "urn:mace:egi.eu:group:vo.other:role=member#second.example",
        "not a urn",
    ]
    assert entitlement_groups(urns, {EGI}) == {"vo.astro", "vo.astro:analysis"}
    assert entitlement_groups(urns, {EGI, "second.example"}) == {"vo.astro", "vo.astro:analysis", "vo.other"}
    assert entitlement_groups(urns, set()) == set()
    assert entitlement_groups(None, {EGI}) == set()
    assert entitlement_groups(urns[0], {EGI}) == {"vo.astro"}


USERNAMES = [
    ("voperson_id", "alice.astro@egi.eu", "alice.astro-egi.eu"),
    ("upper-case", "Alice.Astro@EGI.eu", "alice.astro-egi.eu"),
    ("accents", "José Müller", "jose-muller"),
    ("cilogon-prefix", "github:octocat", "github-octocat"),
    ("leading-digit", "0123abc@egi.eu", "u0123abc-egi.eu"),
    ("trim-separators", "..alice--", "alice"),
    ("shell-metachars", "a;rm -rf /;b", "a-rm--rf-b"),
]


@pytest.mark.parametrize(("value", "expected"), [c[1:] for c in USERNAMES], ids=[c[0] for c in USERNAMES])
def test_safe_username(value, expected):
    assert safe_username(value) == expected
    assert safe_username(expected) == expected


def test_long_usernames_stay_distinct_and_stable():
    a = "f" * 64 + "@egi.eu"
    b = "f" * 63 + "e@egi.eu"
    na, nb = safe_username(a), safe_username(b)
    assert len(na) == len(nb) == 32
    assert na != nb
    assert safe_username(a) == na
    assert safe_username(na) == na


@pytest.mark.parametrize("value", ["", "@@@", "日本"], ids=["empty", "only-symbols", "no-ascii"])
def test_unusable_username_is_refused(value):
    with pytest.raises(ValueError, match="no usable characters"):
        safe_username(value)
