"""The shared queue poller against a stand-in squeue (a real executable): batching and failure rules."""

import asyncio
import time

import pytest

from science_gateway.spawners.poller import UNKNOWN, SlurmQueuePoller
from sgtest.commands import FakeCommand

LINES = "11|RUNNING|None|2026-11-22T03:00:00|vm|cpu|demo|sg\n12|PENDING|Resources|N/A|n/a|debug|student|sg\n"


@pytest.fixture
def fake_squeue(tmp_path):
    """An executable squeue whose answer is ``LINES`` until ``set(out=...)``; ``set(mode="fail"|"hang")``."""
    return FakeCommand(tmp_path, "squeue", out=LINES)


def make_poller(fake, **traits):
    return SlurmQueuePoller(squeue=fake.path, job_name="sg", interval=3600, fast_interval=0.05, timeout=1, **traits)


async def test_many_lookups_share_one_squeue(fake_squeue):
    poller = make_poller(fake_squeue)
    results = await asyncio.gather(*(poller.lookup(job) for job in ["11", "12", "13"] * 10))
    assert fake_squeue.calls() == 1
    assert results[0].running and results[1].pending and results[2] is None


async def test_failures_and_hangs_keep_the_last_snapshot(fake_squeue):
    poller = make_poller(fake_squeue)
    assert (await poller.lookup("11")).running
    fake_squeue.set(out="")  # if it were read, job 11 would be gone
    for mode in ("fail", "hang"):
        fake_squeue.set(mode=mode)
        await poller.refresh()
        assert poller.last_error
        assert (await poller.lookup("11")).running, mode
    fake_squeue.set(mode="ok")
    await poller.refresh()
    assert await poller.lookup("11") is None


@pytest.mark.parametrize("mode, says", [("fail", "Unable to contact slurm controller"), ("hang", "no answer within 1 s")])
async def test_trouble_is_said_while_it_lasts(fake_squeue, mode, says):
    poller = make_poller(fake_squeue)
    await poller.refresh()
    assert poller.trouble() == ""
    fake_squeue.set(mode=mode)
    await poller.refresh()
    await poller.refresh()
    message = poller.trouble()
    assert "Slurm is not answering since" in message and says in message, message
    assert "No server is stopped" in message
    assert (await poller.lookup("11")).running
    fake_squeue.set(mode="ok")
    await poller.refresh()
    assert poller.trouble() == ""


DRAINED = "21|PENDING|ReqNodeNotAvail, UnavailableNodes:vm|N/A|n/a|cpu|demo|sg\n"


async def test_sinfo_runs_only_while_a_job_waits_for_nodes(tmp_path, fake_squeue):
    sinfo = FakeCommand(tmp_path, "sinfo", out="vm|cpu*|drained|Kill task failed\n")
    poller = make_poller(fake_squeue, sinfo=sinfo.path)
    for job in ("11", "12", "21"):
        poller.watch(job)
    await poller.refresh()
    assert sinfo.calls() == 0  # job 12 waits for Resources: busy, not unavailable
    fake_squeue.set(out=LINES + DRAINED)
    await poller.refresh()
    assert sinfo.calls() == 1
    assert sinfo.lines()[-1][-2:] == ["--partition=cpu", "--format=%N|%P|%T|%E"]
    info = await poller.lookup("21")
    assert poller.nodes_unavailable(info) == "node vm is drained (Kill task failed)"
    assert poller.nodes_unavailable(await poller.lookup("12")) == ""
    sinfo.set(out="vm|cpu*|idle|none\n")  # the node was resumed
    await poller.refresh()
    assert poller.nodes_unavailable(info) == ""
    sinfo.set(out="vm|cpu*|drained|Kill task failed\n")
    await poller.refresh()
    assert poller.nodes_unavailable(info)
    fake_squeue.set(mode="fail")  # node states as old as the last snapshot are unknown
    await poller.refresh()
    assert poller.nodes_unavailable(info) == ""
    fake_squeue.set(mode="ok")
    sinfo.set(mode="fail")  # unknown node states never fail a spawn
    await poller.refresh()
    assert poller.nodes_unavailable(info) == ""
    for job in ("11", "12", "21"):
        poller.unwatch(job)


async def test_no_snapshot_yet_is_unknown_not_gone(fake_squeue):
    fake_squeue.set(mode="fail")
    poller = make_poller(fake_squeue)
    assert await poller.lookup("11") is UNKNOWN


async def test_a_job_newer_than_the_snapshot_is_unknown(fake_squeue):
    poller = make_poller(fake_squeue)
    await poller.refresh()
    poller.watch("99", submitted_at=time.time())
    assert await poller.lookup("99") is UNKNOWN
    poller.unwatch("99")


async def test_starting_jobs_get_fast_refreshes_then_it_slows_down(fake_squeue):
    poller = make_poller(fake_squeue)
    poller.watch("12", submitted_at=time.time(), starting=True)
    for _ in range(3):
        await poller.next_snapshot(timeout=5)
    assert fake_squeue.calls() >= 3
    poller.started("12")
    await poller.next_snapshot(timeout=0.3)  # let a refresh in flight finish
    calls = fake_squeue.calls()
    await asyncio.sleep(0.5)
    assert fake_squeue.calls() == calls  # back to the slow interval (an hour here)
    poller.unwatch("12")


def poller_count(name: str, command: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(f"science_gateway_poller_{name}_total", {"command": command}) or 0.0


async def test_calls_and_errors_are_counted_in_the_hubs_metrics(fake_squeue):
    """``science_gateway_poller_{calls,errors}_total{command}`` (the hub's /hub/metrics, whose
    registry is prometheus_client's default one) move with each squeue."""
    poller = make_poller(fake_squeue)
    calls, errors = poller_count("calls", "squeue"), poller_count("errors", "squeue")
    await poller.refresh()
    fake_squeue.set(mode="fail")
    await poller.refresh()
    assert (poller_count("calls", "squeue"), poller_count("errors", "squeue")) == (calls + 2, errors + 1)
