"""Typed config: dicts to typed objects, and misspelt settings named instead of silently ignored."""

import pytest
from traitlets import Integer
from traitlets.config import Config, LoggingConfigurable

from science_gateway.core.policy import PartitionLimits, ResourcePolicy
from science_gateway.core.typed import build_typed, check_settings, unknown_settings


def test_build_typed_names_the_place_and_the_key():
    assert build_typed(PartitionLimits, {"max_cores": 2}, "p").max_cores == 2
    with pytest.raises(ValueError, match=r"partition 'cpu': unknown keys \['max_corez'\]"):
        build_typed(PartitionLimits, {"max_corez": 2}, "partition 'cpu'")
    with pytest.raises(ValueError, match="p: expected a dict, got list"):
        build_typed(PartitionLimits, [], "p")
    with pytest.raises(ValueError, match="p: The 'max_cores' trait"):
        build_typed(PartitionLimits, {"max_cores": "x"}, "p")


def test_unknown_settings_of_our_classes_with_a_suggestion():
    c = Config({"ResourcePolicy": {"grups": {}, "groups": {}}, "LoggingConfigurable": {"anything": 1}})
    assert unknown_settings(c, ResourcePolicy) == ["ResourcePolicy.grups (did you mean groups?)"]
    with pytest.raises(ValueError, match=r"hub config: unknown settings ResourcePolicy\.grups"):
        check_settings(c, [ResourcePolicy], "hub config")
    check_settings(Config({"ResourcePolicy": {"groups": {}}}), [ResourcePolicy], "hub config")


def test_other_projects_sections_are_theirs_to_check():
    class Theirs(LoggingConfigurable):  # defined here, so its module is not science_gateway's
        size = Integer(1).tag(config=True)

    assert unknown_settings(Config({"Theirs": {"sise": 2}}), Theirs) == []
