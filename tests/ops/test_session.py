"""``GET /gateway/api/session``: when the server's batch job ends, and the walltime warning (a real
Jupyter Server; squeue a stand-in executable)."""

import datetime
import json
import time

import pytest
from sgtest.commands import FakeCommand

from science_gateway.jupyter_ext.session import describe_end, parse_end_time


def test_squeue_end_times():
    local = datetime.datetime(2026, 12, 6, 23, 41, 0)
    assert parse_end_time("2026-12-06T23:41:00\n") == local.timestamp()
    assert [parse_end_time(t) for t in ("Unknown", "N/A", "NONE", "")] == [None] * 4


@pytest.mark.parametrize("left, warned", [(3600, False), (901, False), (900, True), (61, True), (0, True)])
def test_the_warning_comes_within_the_margin(left, warned):
    answer = describe_end(1000.0 + left, 1000.0, warn_before=900)
    assert answer["ends"] and answer["seconds_left"] == left
    assert bool(answer["warning"]) == warned
    if warned:
        minutes = (left + 59) // 60
        assert f"ends in {minutes} minute" in answer["warning"] and "save your work" in answer["warning"]


def test_no_job_no_end():
    assert describe_end(None, 1000.0, 900) == {"ends": False, "end_time": None, "seconds_left": None, "warning": ""}


@pytest.fixture
def squeue(tmp_path):
    end = datetime.datetime.fromtimestamp(time.time() + 600).strftime("%Y-%m-%dT%H:%M:%S")
    return FakeCommand(tmp_path, "squeue", out=end + "\n")


@pytest.fixture
def gateway_config(squeue):
    return {"GatewayExtension": {"squeue_path": squeue.path, "walltime_warning_minutes": 15}}


async def test_outside_a_batch_job_there_is_no_end(jp_fetch, monkeypatch, squeue):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    body = json.loads((await jp_fetch("gateway", "api", "session")).body)
    assert body == {"scheduler": None, "job_id": None, "ends": False, "end_time": None, "seconds_left": None,
                    "warning": ""}
    assert squeue.calls() == 0


async def test_in_a_slurm_job_squeue_says_when_and_is_asked_once(jp_fetch, monkeypatch, squeue):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_JOB_END_TIME", raising=False)
    for _ in range(3):
        body = json.loads((await jp_fetch("gateway", "api", "session")).body)
        assert body["scheduler"] == "slurm" and body["job_id"] == "4242" and body["ends"]
        assert 540 <= body["seconds_left"] <= 600
        assert "ends in 10 minutes" in body["warning"], body
    assert squeue.calls() == 1
    assert squeue.lines()[-1][1:] == ["-h", "-j", "4242", "-o", "%e"]


async def test_slurm_job_end_time_in_the_environment_needs_no_squeue(jp_fetch, monkeypatch, squeue):
    monkeypatch.setenv("SLURM_JOB_ID", "4243")
    monkeypatch.setenv("SLURM_JOB_END_TIME", str(int(time.time()) + 7200))
    body = json.loads((await jp_fetch("gateway", "api", "session")).body)
    assert body["ends"] and 7100 <= body["seconds_left"] <= 7200 and body["warning"] == ""
    assert squeue.calls() == 0
