"""Pure builders: policy + options -> sbatch argv and job script; squeue parsing; the form."""

import shlex

import pytest
from traitlets.config import Config

from science_gateway.core.policy import ResourcePolicy
from science_gateway.spawners.form import options_from_form_data, render_form
from science_gateway.spawners.slurm_script import (
    JobInfo,
    NodeInfo,
    build_comment,
    build_job_script,
    build_sbatch_argv,
    build_scancel_argv,
    build_sinfo_argv,
    build_squeue_argv,
    expand_prefix,
    parse_sbatch_output,
    parse_sinfo,
    parse_squeue,
    unavailable_nodes,
    waits_for_nodes,
)


def site_config() -> Config:
    c = Config()
    c.ResourcePolicy.groups = {
        "astro": {
            "accounts": ["astro-2024"],
            "partitions": {"cpu": {"max_cores": 4, "max_memory_gb": 16, "max_gpus": 1, "max_walltime_hours": 48}},
        },
        "students": {"partitions": {"debug": {"max_cores": 1, "max_memory_gb": 2, "max_walltime_hours": 1}}},
    }
    return c


def argv_for(groups, options, **overrides):
    request = ResourcePolicy(config=site_config()).validate(groups, options)
    kwargs = dict(
        sbatch="/usr/bin/sbatch",
        prefix=expand_prefix(["/usr/bin/sudo", "-n", "-u", "{username}"], "demo"),
        job_name="science-gateway-jupyter",
        comment=build_comment("demo@example.org", "science-gateway"),
        output="/home/demo/.sg-%j.log",
        workdir="/home/demo",
        export=["PATH", "JUPYTERHUB_API_TOKEN"],
    )
    kwargs.update(overrides)
    return build_sbatch_argv(request, **kwargs)


COMMON = [
    "/usr/bin/sudo", "-n", "-u", "demo", "/usr/bin/sbatch", "--parsable",
    "--job-name=science-gateway-jupyter",
    "--comment=science-gateway=science-gateway user=demo@example.org",
]


@pytest.mark.parametrize(
    "groups, options, resources",
    [
        pytest.param(
            ["astro"], {},
            ["--partition=cpu", "--nodes=1", "--ntasks=1", "--cpus-per-task=1", "--mem=2G", "--time=01:00:00"],
            id="astro-defaults",
        ),
        pytest.param(
            ["astro"], {"cores": "4", "memory_gb": "16", "gpus": "1", "walltime_hours": "48"},
            ["--partition=cpu", "--nodes=1", "--ntasks=1", "--cpus-per-task=4", "--mem=16G", "--time=2-00:00:00"],
            id="astro-max-with-gpu",
        ),
        pytest.param(
            ["students"], {"partition": "debug"},
            ["--partition=debug", "--nodes=1", "--ntasks=1", "--cpus-per-task=1", "--mem=2G", "--time=01:00:00"],
            id="student-debug-no-account",
        ),
    ],
)
def test_sbatch_argv_from_policy_and_options(groups, options, resources):
    argv = argv_for(groups, options)
    assert argv[: len(COMMON)] == COMMON
    assert argv[len(COMMON) : len(COMMON) + len(resources)] == resources
    rest = argv[len(COMMON) + len(resources) :]
    assert rest[:3] == ["--output=/home/demo/.sg-%j.log", "--chdir=/home/demo", "--export=JUPYTERHUB_API_TOKEN,PATH"]
    assert ("--gres=gpu:1" in rest) == bool(options.get("gpus"))
    assert ("--account=astro-2024" in rest) == ("astro" in groups)


def test_comment_cannot_smuggle_options_or_lines():
    comment = build_comment("eve\n#SBATCH --uid=0 $(id) `x`;|&", "gw")
    assert "\n" not in comment and "$" not in comment and "`" not in comment and ";" not in comment
    assert comment == "science-gateway=gw user=eve__SBATCH --uid=0 __id_ _x____"


@pytest.mark.parametrize(
    "command, prologue, last_line",
    [
        pytest.param(["/opt/venv/bin/jupyterhub-singleuser"], "", "exec /opt/venv/bin/jupyterhub-singleuser", id="plain"),
        pytest.param(["/opt/v/bin/jupyterhub-singleuser", "--notebook-dir=~/my work"], "module load python",
                     "exec /opt/v/bin/jupyterhub-singleuser '--notebook-dir=~/my work'", id="quoted-arg-with-prologue"),
        pytest.param(["/x", "$(rm -rf /)"], "", "exec /x '$(rm -rf /)'", id="substitution-stays-literal"),
    ],
)
def test_job_script(command, prologue, last_line):
    script = build_job_script(command, prologue)
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    assert lines[-1] == last_line
    assert shlex.split(last_line)[1:] == command
    assert (prologue in lines) == bool(prologue)
    assert not any(line.startswith("#SBATCH") for line in lines)


def test_squeue_and_scancel_argv():
    assert build_squeue_argv("/usr/bin/squeue", "sg") == [
        "/usr/bin/squeue", "--noheader", "--all", "--states=all", "--name=sg", "--format=%i|%T|%r|%S|%B|%P|%u|%j",
    ]
    assert build_scancel_argv("/usr/bin/scancel", ["sudo", "-u", "demo"], "42") == ["sudo", "-u", "demo", "/usr/bin/scancel", "42"]
    with pytest.raises(ValueError):
        build_scancel_argv("/usr/bin/scancel", [], "42; rm")


@pytest.mark.parametrize(
    "output, job_id",
    [("17\n", "17"), ("sbatch: warning: x\n18;cluster\n", "18")],
    ids=["plain", "warning-and-cluster"],
)
def test_parse_sbatch(output, job_id):
    assert parse_sbatch_output(output) == job_id


def test_parse_sbatch_without_id_fails():
    with pytest.raises(ValueError):
        parse_sbatch_output("sbatch: error: Batch job submission failed")


def test_parse_squeue_and_describe():
    jobs = parse_squeue(
        "12|PENDING|Resources|2026-11-22T05:00:00|n/a|debug|student|sg\n"
        "13|RUNNING|None|2026-11-22T03:00:00|vm|cpu|demo|sg\n"
        "14|FAILED|NonZeroExitCode|2026-11-22T03:00:00|vm|cpu|demo|sg\n"
        "garbage line\n"
    )
    assert sorted(jobs) == ["12", "13", "14"]
    assert jobs["12"].pending and jobs["13"].running and jobs["14"].finished
    assert jobs["12"].describe() == (
        "Job 12 is queued in partition debug, waiting for Resources; estimated start 2026-11-22 05:00:00"
    )
    assert jobs["13"].describe() == "Job 13 is running on vm; waiting for Jupyter to answer"
    assert jobs["14"].describe() == "Job 14 ended: FAILED (NonZeroExitCode)"
    assert JobInfo("1", "PENDING", "Priority", "N/A", partition="cpu").describe() == (
        "Job 1 is queued in partition cpu, waiting for Priority"
    )


@pytest.mark.parametrize(
    "reason, for_nodes",
    [
        ("ReqNodeNotAvail, UnavailableNodes:vm", True),
        ("ReqNodeNotAvail, Reserved for maintenance", True),
        ("Nodes_required_for_job_are_DOWN,_DRAINED_or_reserved_for_jobs_in_higher_priority_partitions", True),
        ("Nodes required for job are DOWN, DRAINED or reserved for jobs in higher priority partitions", True),
        ("PartitionDown", True),
        ("Resources", False),
        ("Priority", False),
        ("None", False),
    ],
    ids=lambda v: str(v)[:20],
)
def test_which_pending_reasons_wait_for_nodes(reason, for_nodes):
    assert waits_for_nodes(reason) is for_nodes


@pytest.mark.parametrize(
    "state, available",
    [
        ("idle", True), ("mixed", True), ("allocated", True), ("completing", True), ("mixed-", True),
        ("drained", False), ("draining", False), ("drain", False), ("down", False), ("down*", False),
        ("idle*", False), ("idle+drain", False), ("mixed+drain", False), ("maint", False),
        ("powered_down", False), ("idle~", True), ("", False),
    ],
)
def test_node_states_that_take_jobs(state, available):
    assert NodeInfo("vm", "cpu", state).available is available


def test_sinfo_argv_and_parsing():
    assert build_sinfo_argv("/usr/bin/sinfo", ["debug", "cpu", "cpu"]) == [
        "/usr/bin/sinfo", "--noheader", "--Node", "--partition=cpu,debug", "--format=%N|%P|%T|%E",
    ]
    for bad in ([], ["cpu,debug"], ["--all"], ["a b"]):
        with pytest.raises(ValueError):
            build_sinfo_argv("/usr/bin/sinfo", bad)
    out = "vm|cpu*|drained|Kill task failed\nvm|debug|drained|Kill task failed\nn2|debug|idle|none\ngarbage\n"
    nodes = parse_sinfo(out)
    assert sorted(nodes) == ["cpu", "debug"]
    assert nodes["cpu"] == [NodeInfo("vm", "cpu", "drained", "Kill task failed")]
    assert unavailable_nodes(nodes["cpu"]) == "node vm is drained (Kill task failed)"
    assert unavailable_nodes(nodes["debug"]) == ""  # n2 still takes jobs
    assert unavailable_nodes([]) == ""  # unknown nodes never fail a spawn
    assert parse_sinfo("vm|cpu|down*|Not responding|with|bars\n")["cpu"][0].reason == "Not responding|with|bars"
    assert NodeInfo("vm", "cpu", "down*", "none").describe() == "node vm is down"


def test_form_shows_only_allowed_choices():
    policy = ResourcePolicy(config=site_config())
    html = render_form(policy.choices(["students"]), policy.default_request(["students"]))
    assert '<option value="debug" selected>debug</option>' in html
    assert 'value="cpu"' not in html
    assert 'name="cores" value="1" min="1" max="1"' in html
    assert 'name="gpus"' not in html and 'name="account"' not in html
    astro = render_form(policy.choices(["astro"]), policy.validate(["astro"], {"cores": 3}))
    assert 'name="cores" value="3" min="1" max="4"' in astro
    assert 'name="gpus"' in astro and '<option value="astro-2024" selected>' in astro


@pytest.mark.parametrize(
    "prefix, names, expected",
    [
        pytest.param(
            ["sudo", "-n", "-u", "{username}", "--preserve-env={env_names}"], ["PATH", "JUPYTERHUB_API_TOKEN"],
            ["sudo", "-n", "-u", "alice", "--preserve-env=JUPYTERHUB_API_TOKEN,PATH"], id="names-not-values",
        ),
        pytest.param(
            ["sudo", "-n", "-u", "{username}", "--preserve-env={env_names}"], [],
            ["sudo", "-n", "-u", "alice"], id="no-names-no-option",
        ),
        pytest.param([], ["PATH"], [], id="hub-runs-as-the-user"),
    ],
)
def test_expand_prefix(prefix, names, expected):
    assert expand_prefix(prefix, "alice", names) == expected


def test_options_from_form_data():
    assert options_from_form_data({"_xsrf": ["t"], "cores": ["2"], "partition": ["cpu"], "x": ["1", "2"]}) == {
        "cores": "2", "partition": "cpu", "x": ["1", "2"],
    }


def test_spawner_entry_point_and_its_defaults():
    from importlib.metadata import entry_points

    (ep,) = [ep for ep in entry_points(group="jupyterhub.spawners") if ep.name == "science-gateway-slurm"]
    cls = ep.load()
    import batchspawner

    assert issubclass(cls, batchspawner.SlurmSpawner)
    spawner = cls(config=site_config())
    assert spawner.cmd == [f"{spawner.python_prefix}/bin/jupyterhub-singleuser"]
    assert spawner.policy.choices(["students"]).partitions.keys() == {"debug"}
    assert callable(spawner.apply_user_options) and callable(spawner.options_form)
