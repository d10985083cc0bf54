"""The cluster launcher without a browser: presets offered, limits shown and enforced, live count.

It drives a real local Dask cluster (the embedded default's backend) from presets handed over the
way the hub hands them (``SCIENCE_GATEWAY_DASK``).
"""

import json

import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("distributed")

from science_gateway.core.presets import ENV_VAR, DaskPresets  # noqa: E402
from science_gateway.widgets.state import preset_options, workers_text  # noqa: E402
from science_gateway.widgets import ClusterLauncher  # noqa: E402
from sgtest.hub import wait_for  # noqa: E402


def env(presets, max_dask_workers=None, groups=("astro",)):
    view = DaskPresets(presets=presets).user_view(backend="local", groups=groups, max_dask_workers=max_dask_workers)
    return {ENV_VAR: json.dumps(view)}


TINY = {"tiny": {"description": "one small worker at a time", "cores": 1, "memory_gb": 1, "max_workers": 3}}


def test_only_the_users_presets_are_offered_with_the_user_limit():
    presets = {**TINY, "big": {"cores": 2, "memory_gb": 2, "max_workers": 8, "groups": ["admin"]}}
    launcher = ClusterLauncher(environ=env(presets, max_dask_workers=2))
    assert [name for _, name in launcher.preset.options] == ["tiny"]
    assert launcher.preset.options[0][0] == "tiny: one small worker at a time"
    # the user's max_dask_workers (2) is lower than the preset's (3)
    assert "Up to 2 workers" in launcher.limit.value
    assert launcher.workers.max == 2 and launcher.workers.value == 2 and launcher.adapt_max.value == 2


def test_no_presets_reads_as_a_sentence_and_disables_the_buttons():
    launcher = ClusterLauncher(environ=env(TINY, groups=(), max_dask_workers=0))
    assert launcher.preset.options == ()
    assert "may not start Dask clusters" in launcher.error.value
    assert launcher.start_button.disabled and launcher.scale_button.disabled


def test_unreadable_presets_are_an_error_message_not_a_traceback():
    launcher = ClusterLauncher(environ={ENV_VAR: "{not json"})
    assert "unreadable" in launcher.error.value and "Traceback" not in launcher.error.value


def test_workers_text():
    assert workers_text(0, 0) == "No workers: scale up to start some."
    assert workers_text(1, 2) == "1 of 2 workers connected."
    assert workers_text(3, 4, (0, 8)) == "Adapting between 0 and 8 workers: 3 connected, 4 requested."
    options = preset_options({"presets": {"big": {"cores": 2, "memory_gb": 4}, "small": {"cores": 1, "memory_gb": 2}}})
    assert options == [("small: 1 core, 2 GB per worker", "small"), ("big: 2 cores, 4 GB per worker", "big")]


def test_start_scale_beyond_limit_adapt_and_close_a_real_local_cluster():
    launcher = ClusterLauncher(environ=env(TINY), interval=0.2)
    try:
        launcher.scale(1)  # starts the cluster first
        cluster = launcher.cluster
        assert cluster is not None and launcher.error.value == ""
        wait_for(lambda: "1 of 1 worker connected" in launcher.count.value, 60, what="the launcher to count 1 worker")
        assert "Dask dashboard" in launcher.dashboard.value and "/status" in launcher.dashboard.value
        with launcher.get_client() as client:
            assert client.submit(sum, [1, 2]).result(timeout=30) == 3

        launcher.scale(5)
        assert "at most 3 workers" in launcher.error.value and "Traceback" not in launcher.error.value
        assert len(cluster.worker_spec) == 1  # the refused request changed nothing

        launcher.adapt(0, 2)
        assert launcher.error.value == ""
        wait_for(lambda: "Adapting between 0 and 2 workers" in launcher.count.value, 60, what="the launcher to say it adapts")
    finally:
        launcher.close_cluster()
    assert launcher.cluster is None and cluster.status.name == "closed"
    assert launcher.count.value == "No cluster running." and launcher.dashboard.value == ""
