"""The group resource policy: typed from config dicts, choices per groups, validation messages."""

import pytest
from traitlets.config import Config

from science_gateway.core.policy import PolicyError, ResourcePolicy, ResourceRequest


def policy_from(groups: dict) -> ResourcePolicy:
    c = Config()
    c.ResourcePolicy.groups = groups
    return ResourcePolicy(config=c)


SITE = {
    "astro": {
        "accounts": ["astro-2024", "astro-dev"],
        "partitions": {
            "cpu": {"max_cores": 4, "max_memory_gb": 16, "max_walltime_hours": 24, "default_cores": 2},
            "long": {"max_cores": 2, "max_memory_gb": 8, "max_walltime_hours": 168},
        },
    },
    "gpu-users": {"accounts": ["gpu-2024"], "partitions": {"cpu": {"max_cores": 8, "max_gpus": 2, "max_memory_gb": 8}}},
    "students": {"accounts": ["teaching"], "partitions": {"debug": {"max_cores": 1, "max_memory_gb": 2, "max_walltime_hours": 1}}},
}


def test_config_dicts_become_typed_objects():
    policy = policy_from(SITE)
    cpu = policy.groups["astro"].partitions["cpu"]
    assert (cpu.max_cores, cpu.max_memory_gb, cpu.max_gpus, cpu.default_cores) == (4, 16, 0, 2)


@pytest.mark.parametrize(
    "groups, error",
    [
        pytest.param({"astro": {"partitons": {}}}, "unknown keys ['partitons']", id="typo-in-group-key"),
        pytest.param({"astro": {"partitions": {"cpu": {"max_core": 2}}}}, "unknown keys ['max_core']", id="typo-in-limit"),
        pytest.param({"astro": {"partitions": {"cpu;rm": {}}}}, "partition name", id="unsafe-partition-name"),
        pytest.param({"astro": {"accounts": ["a b"]}}, "account name", id="unsafe-account-name"),
        pytest.param({"astro": {"partitions": {"cpu": {"max_cores": 0}}}}, "max_cores", id="zero-cores"),
    ],
)
def test_bad_policy_config_is_refused_at_startup(groups, error):
    with pytest.raises(ValueError) as exc:
        policy_from(groups)
    assert error in str(exc.value)


@pytest.mark.parametrize(
    "groups, partitions, accounts",
    [
        pytest.param(["astro"], {"cpu": 4, "long": 2}, ("astro-2024", "astro-dev"), id="astro"),
        pytest.param(["students"], {"debug": 1}, ("teaching",), id="students-only-debug"),
        pytest.param(["astro", "gpu-users"], {"cpu": 8, "long": 2}, ("astro-2024", "astro-dev", "gpu-2024"), id="union-most-generous"),
        pytest.param(["unknown"], {}, (), id="no-policy-group"),
    ],
)
def test_choices_for_groups(groups, partitions, accounts):
    choices = policy_from(SITE).choices(groups)
    assert {name: lim.max_cores for name, lim in choices.partitions.items()} == partitions
    assert choices.accounts == accounts


@pytest.mark.parametrize(
    "groups, options, expected",
    [
        pytest.param(["astro"], {}, ResourceRequest("cpu", 2, 2, 0, 1, "astro-2024"), id="defaults"),
        pytest.param(
            ["astro"],
            {"partition": "long", "cores": "2", "memory_gb": "8", "walltime_hours": "100", "account": "astro-dev"},
            ResourceRequest("long", 2, 8, 0, 100, "astro-dev"),
            id="form-strings",
        ),
        pytest.param(["astro"], {"cores": 4, "memory_gb": 16}, ResourceRequest("cpu", 4, 16, 0, 1, "astro-2024"), id="json-ints-at-limit"),
        pytest.param(["astro", "gpu-users"], {"gpus": 2}, ResourceRequest("cpu", 2, 2, 2, 1, "astro-2024"), id="gpus-from-second-group"),
        pytest.param(["students"], {"partition": "debug"}, ResourceRequest("debug", 1, 2, 0, 1, "teaching"), id="student"),
    ],
)
def test_valid_requests(groups, options, expected):
    assert policy_from(SITE).validate(groups, options) == expected


@pytest.mark.parametrize(
    "groups, options, message",
    [
        pytest.param(["students"], {"partition": "cpu"}, "partition 'cpu' is not allowed for your groups; allowed: debug", id="forbidden-partition"),
        pytest.param(["astro"], {"cores": 5}, "cores on partition 'cpu' must be 1 to 4, got 5", id="too-many-cores"),
        pytest.param(["astro"], {"cores": 0}, "must be 1 to 4", id="zero-cores"),
        pytest.param(["astro"], {"cores": "-1"}, "cores must be a whole number", id="negative-string"),
        pytest.param(["astro"], {"cores": "2; rm -rf /"}, "cores must be a whole number", id="shell-metachar-cores"),
        pytest.param(["astro"], {"cores": 2.5}, "whole number", id="float"),
        pytest.param(["astro"], {"cores": True}, "whole number", id="bool"),
        pytest.param(["astro"], {"memory_gb": "1e3"}, "whole number", id="exponent"),
        pytest.param(["astro"], {"partition": "cpu\n#SBATCH --uid=0"}, "is not allowed", id="newline-partition"),
        pytest.param(["astro"], {"partition": ["cpu"]}, "is not allowed", id="list-partition"),
        pytest.param(["astro"], {"gpus": 1}, "gpus on partition 'cpu' must be 0 to 0", id="no-gpus"),
        pytest.param(["astro"], {"walltime_hours": 25}, "must be 1 to 24", id="walltime"),
        pytest.param(["astro"], {"account": "teaching"}, "account 'teaching' is not allowed; allowed".replace("; allowed", " for your groups; allowed"), id="other-groups-account"),
        pytest.param(["astro"], {"account": "$(id)"}, "is not allowed", id="account-substitution"),
        pytest.param(["astro"], {"image": "evil"}, "unknown options 'image'; allowed options:", id="unknown-key"),
        # wrongly typed falsy values are refused, never turned into defaults
        pytest.param(["astro"], {"partition": 0}, "partition 0 is not allowed", id="falsy-int-partition"),
        pytest.param(["astro"], {"partition": False}, "partition False is not allowed", id="false-partition"),
        pytest.param(["astro"], {"account": False}, "account must be a name, got False", id="false-account"),
        pytest.param(["astro"], {"account": 0}, "account must be a name, got 0", id="zero-account"),
        pytest.param(["astro"], {"account": []}, "account must be a name, got <list>", id="empty-list-account"),
        pytest.param(["astro"], {"cores": "\uff12"}, "cores must be a whole number", id="fullwidth-digit"),
        pytest.param(["astro"], {"partition": "x" * 100_000}, "partition 'xxxxxxxx", id="huge-partition-quoted-short"),
        pytest.param(["unknown"], {}, "none of your groups (unknown) may start servers", id="no-group"),
    ],
)
def test_refused_requests_say_what_is_allowed(groups, options, message):
    with pytest.raises(PolicyError) as exc:
        policy_from(SITE).validate(groups, options)
    assert message in str(exc.value)
    assert len(str(exc.value)) < 400  # a short prefix of what was refused, never all of it
