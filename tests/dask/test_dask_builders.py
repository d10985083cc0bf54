"""Pure builders: admin config (a real traitlets Config) + policy -> what the kernel's cluster gets."""

import json

import pytest
from traitlets.config import Config

from science_gateway.core.policy import ResourcePolicy
from science_gateway.dask.builders import (
    array_job_header,
    array_worker_command,
    CALLER_KWARGS,
    DaskLimitError,
    check_workers,
    checked_cluster_kwargs,
    local_cluster_kwargs,
    slurm_cluster_kwargs,
    worker_comment,
    workers_for,
)
from science_gateway.core.presets import (
    DASHBOARD_LINK,
    DASHBOARD_LINK_ENV,
    ENV_VAR,
    DaskPresetError,
    DaskPresets,
    UserDaskConfig,
    dask_environment,
    worker_job_name,
    worker_lifetime,
)
from science_gateway.spawners.slurm_script import build_cancel_workers_argv


def site_config(**presets_and_site) -> Config:
    c = Config()
    c.DaskPresets.presets = presets_and_site.pop("presets")
    for key, value in presets_and_site.items():
        setattr(c.DaskPresets, key, value)
    c.ResourcePolicy.groups = {
        "astro": {"accounts": ["astro-2024"], "max_dask_workers": 6,
                  "partitions": {"cpu": {"max_cores": 4}, "long": {"max_cores": 1}}},
        "students": {"accounts": ["teaching"], "max_dask_workers": 0, "partitions": {"debug": {}}},
        "big": {"max_dask_workers": 32, "partitions": {"cpu": {}}},
    }
    return c


SMALL = {"description": "small", "partition": "cpu", "cores": 1, "memory_gb": 2, "walltime_minutes": 60,
         "workers_per_job": 4, "max_workers": 8}

SLURM_CASES = [
    pytest.param(
        site_config(presets={"small": SMALL}), "small", "astro-2024",
        {"cores": 4, "processes": 4, "memory": "8GiB", "walltime": "01:00:00", "queue": "cpu",
         "account": "astro-2024", "job_name": "science-gateway-dask-77",
         "job_extra_directives": ['--comment="science-gateway=sg user=alice@example.org dask=small"'],
         "worker_extra_args": ["--lifetime", "54m", "--lifetime-stagger", "3m"], "death_timeout": 60,
         "python": "/opt/env/bin/python", "log_directory": "/home/alice/logs",
         "security": True, "shared_temp_directory": "/home/alice/tls",
         "scheduler_options": {"dashboard_address": "127.0.0.1:0", "host": "10.1.2.3"},
         "nanny": False, "array_tasks": 4, "task_cores": 1, "task_memory_gb": 2},
        id="small-four-workers-per-sbatch-as-an-array",
    ),
    pytest.param(
        site_config(presets={"packed": {**SMALL, "job_layout": "processes"}}), "packed", "astro-2024",
        {"cores": 4, "processes": 4, "memory": "8GiB", "nanny": True},
        id="four-workers-as-processes-of-one-job-need-a-nanny",
    ),
    pytest.param(
        site_config(
            presets={"big": {"partition": "long", "cores": 2, "memory_gb": 3, "walltime_minutes": 600,
                             "extra_directives": ["--qos=dask"], "account": "fallback"}},
            interface="lo", death_timeout=30, lifetime_margin_minutes=10,
            job_script_prologue=["module load python"],
        ),
        "big", "",
        {"cores": 2, "processes": 1, "memory": "3GiB", "walltime": "10:00:00", "queue": "long",
         "account": "fallback", "interface": "lo", "death_timeout": 30, "security": True,
         # the interface decides where the scheduler listens: no host of its own
         "scheduler_options": {"dashboard_address": "127.0.0.1:0"},
         "job_extra_directives": ['--comment="science-gateway=sg user=alice@example.org dask=big"', "--qos=dask"],
         "worker_extra_args": ["--lifetime", "560m", "--lifetime-stagger", "30m"],
         "job_script_prologue": ["module load python"]},
        id="preset-account-when-session-has-none-and-site-settings",
    ),
    pytest.param(
        site_config(presets={"any": {"walltime_minutes": 30, "account": "fallback"}}), "any", "astro-2024",
        {"queue": None, "account": "astro-2024", "walltime": "00:30:00",
         "worker_extra_args": ["--lifetime", "26m", "--lifetime-stagger", "1m"]},
        id="session-account-wins-default-partition",
    ),
]


@pytest.mark.parametrize("config, name, account, expected", SLURM_CASES)
def test_slurm_cluster_kwargs(config, name, account, expected):
    presets = DaskPresets(config=config)
    kwargs = slurm_cluster_kwargs(
        name, presets.presets[name], presets, account=account, comment="science-gateway=sg user=alice@example.org",
        python="/opt/env/bin/python", job_name=worker_job_name(presets.job_name, "77"),
        log_directory="/home/alice/logs", tls_directory="/home/alice/tls", scheduler_host="10.1.2.3",
    )
    assert kwargs["n_workers"] == 0
    # only holders of the cluster's own temporary credentials get in, on a named address
    assert kwargs["security"] is True and kwargs["shared_temp_directory"] == "/home/alice/tls"
    assert kwargs["scheduler_options"]["dashboard_address"] == "127.0.0.1:0"
    assert ("interface" in kwargs) != ("host" in kwargs["scheduler_options"])
    for key, value in expected.items():
        assert kwargs[key] == value, key
    if "interface" not in expected:
        assert "interface" not in kwargs
    if "array_tasks" not in expected:
        assert "array_tasks" not in kwargs
    # every worker retires before the walltime
    minutes = presets.presets[name].walltime_minutes
    lifetime = int(kwargs["worker_extra_args"][1][:-1])
    stagger = int(kwargs["worker_extra_args"][3][:-1])
    assert lifetime + stagger < minutes and lifetime - stagger > 0


HEADER = """#!/usr/bin/env bash

#SBATCH -J sg-dask-7
#SBATCH -e /logs/sg-dask-7-%J.err
#SBATCH -o /logs/sg-dask-7-%J.out
#SBATCH -p cpu
#SBATCH -n 1
#SBATCH --cpus-per-task=4
#SBATCH --mem=8G
#SBATCH -t 01:00:00
#SBATCH --comment="science-gateway=sg user=a dask=small"
"""


def test_array_header_and_command_give_one_worker_per_task():
    header = array_job_header(HEADER.rstrip("\n"), tasks=4, cores=1, memory_gb=2)
    assert header.splitlines()[2:] == [
        "#SBATCH -J sg-dask-7",
        "#SBATCH -e /logs/sg-dask-7-%A_%a.err",
        "#SBATCH -o /logs/sg-dask-7-%A_%a.out",
        "#SBATCH -p cpu",
        "#SBATCH -n 1",
        "#SBATCH --cpus-per-task=1",
        "#SBATCH --mem=2G",
        "#SBATCH -t 01:00:00",
        '#SBATCH --comment="science-gateway=sg user=a dask=small"',
        "#SBATCH --array=0-3",
    ]
    command = ("/opt/env/bin/python -m distributed.cli.dask_worker tcp://127.0.0.1:4000 --name SLURMCluster-3 "
               "--nthreads 1 --memory-limit 2.00GiB --nworkers 4 --no-nanny --death-timeout 60")
    assert array_worker_command(command) == (
        "/opt/env/bin/python -m distributed.cli.dask_worker tcp://127.0.0.1:4000 "
        "--name SLURMCluster-3-${SLURM_ARRAY_TASK_ID} --nthreads 1 --memory-limit 2.00GiB --no-nanny --death-timeout 60"
    )


def test_local_cluster_kwargs_use_the_same_preset():
    preset = DaskPresets(config=site_config(presets={"small": SMALL})).presets["small"]
    assert local_cluster_kwargs(preset) == {
        "n_workers": 0, "threads_per_worker": 1, "memory_limit": "2GiB", "processes": True,
        "security": True, "host": "127.0.0.1", "dashboard_address": "127.0.0.1:0",
    }


def test_without_an_interface_the_scheduler_needs_a_host():
    presets = DaskPresets(config=site_config(presets={"small": SMALL}))
    with pytest.raises(ValueError, match="scheduler_host is needed"):
        slurm_cluster_kwargs("small", presets.presets["small"], presets, account="", comment="", python="python",
                             job_name="j", log_directory=None, tls_directory="/t")


@pytest.mark.parametrize("key", ["account", "security", "cores", "scheduler_options", "job_extra_directives"])
def test_cluster_kwargs_may_not_override_what_the_preset_decides(key):
    with pytest.raises(TypeError, match=f"does not take {key}: resources, account, security") as info:
        checked_cluster_kwargs({"asynchronous": True, key: None})
    assert "asynchronous, job_cls, loop, name, silence_logs" in str(info.value)


def test_cluster_kwargs_pass_through_what_the_docs_list():
    allowed = {key: object() for key in CALLER_KWARGS}
    assert checked_cluster_kwargs(allowed) == allowed


BAD_PRESETS = [
    pytest.param({"small": {**SMALL, "cpus": 2}}, "unknown keys ['cpus']", id="typo-key"),
    pytest.param({"small": {**SMALL, "cores": 0}}, "cores", id="zero-cores"),
    pytest.param({"small": {**SMALL, "partition": "cpu; rm -rf /"}}, "partition", id="bad-partition"),
    pytest.param({"small": {**SMALL, "extra_directives": ["--qos=a\n#SBATCH --uid=0"]}}, "extra directive",
                 id="newline-directive"),
    pytest.param({"small": {**SMALL, "extra_directives": ["--qos=a b"]}}, "extra directive", id="space-directive"),
    pytest.param({"bad name": SMALL}, "preset name", id="bad-name"),
    pytest.param({"small": {**SMALL, "job_layout": "mpi"}}, "job_layout", id="unknown-layout"),
    pytest.param({"small": ["cpu"]}, "expected a dict", id="not-a-dict"),
]


@pytest.mark.parametrize("presets, message", BAD_PRESETS)
def test_bad_presets_fail_at_startup_naming_the_problem(presets, message):
    with pytest.raises(Exception, match="Dask preset") as info:
        DaskPresets(config=site_config(presets=presets))
    assert message in str(info.value)


VIEW_CASES = [
    pytest.param(["astro"], {"small": 6, "medium": 6}, 6, id="group-limit-caps-presets"),
    pytest.param(["big"], {"small": 8, "medium": 16}, 32, id="preset-caps-generous-group"),
    pytest.param(["astro", "big"], {"small": 8, "medium": 16}, 32, id="most-generous-group-wins"),
    pytest.param(["students"], {}, 0, id="group-without-dask-workers"),
    pytest.param(["nobody"], {}, 0, id="group-not-in-policy"),
]


@pytest.mark.parametrize("groups, limits, total", VIEW_CASES)
def test_user_view_applies_the_group_policy(groups, limits, total):
    config = site_config(presets={"small": SMALL, "medium": {**SMALL, "max_workers": 16},
                                  "gpu": {**SMALL, "partition": "gpu"}, "astro-only": {**SMALL, "groups": ["astro"]}})
    presets = DaskPresets(config=config)
    choices = ResourcePolicy(config=config).choices(groups)
    env = dask_environment(presets, backend="slurm", groups=groups, choices=choices, account="astro-2024",
                           comment="science-gateway=sg user=x")
    assert env[DASHBOARD_LINK_ENV] == DASHBOARD_LINK == "{JUPYTERHUB_SERVICE_PREFIX}proxy/{port}/status"
    user = UserDaskConfig.from_environ(env)
    expected = dict(limits)
    if "astro" in groups and limits:
        expected["astro-only"] = min(8, total)
    # "gpu" is on a partition no group may use: never offered
    assert {name: p.max_workers for name, p in user.presets.items()} == expected
    assert user.max_workers == total
    assert user.account == "astro-2024" and user.backend == "slurm"
    assert json.loads(env[ENV_VAR])["site"]["job_name"] == "science-gateway-dask"


def test_unknown_or_forbidden_preset_says_what_is_allowed():
    config = site_config(presets={"small": SMALL})
    presets = DaskPresets(config=config)
    policy = ResourcePolicy(config=config)
    astro = UserDaskConfig.from_environ(dask_environment(presets, backend="slurm", groups=["astro"],
                                                         choices=policy.choices(["astro"])))
    with pytest.raises(DaskPresetError, match="presets you may use: small"):
        astro.preset("huge")
    student = UserDaskConfig.from_environ(dask_environment(presets, backend="slurm", groups=["students"],
                                                           choices=policy.choices(["students"])))
    with pytest.raises(DaskPresetError, match=r"none of your groups \(students\) is allowed Dask workers"):
        student.preset("small")


def test_without_hub_env_the_embedded_default_presets_are_local():
    user = UserDaskConfig.from_environ({})
    assert user.backend == "local"
    assert set(user.presets) == {"small", "medium"}
    assert user.describe()["presets"]["small"]["max_workers"] == 8


LIMIT_CASES = [
    pytest.param(dict(requested=4, preset_max=8, user_max=6, others=0), None, id="within"),
    pytest.param(dict(requested=6, preset_max=8, user_max=6, others=0), None, id="at-the-limit"),
    pytest.param(dict(requested=8, preset_max=8, user_max=6, others=0), "at most 6 workers", id="over-group"),
    pytest.param(dict(requested=10, preset_max=8, user_max=32, others=0), "at most 8 workers", id="over-preset"),
    pytest.param(dict(requested=4, preset_max=8, user_max=6, others=4), "other clusters hold 4", id="others-count"),
]


@pytest.mark.parametrize("args, error", LIMIT_CASES)
def test_check_workers(args, error):
    if error is None:
        check_workers(**args, preset_name="small", groups=("astro",))
    else:
        with pytest.raises(DaskLimitError, match=error) as info:
            check_workers(**args, preset_name="small", groups=("astro",))
        assert "your groups (astro)" in str(info.value) and "cluster.scale(" in str(info.value)


@pytest.mark.parametrize(
    "n, jobs, per_job, expected",
    [(5, 0, 4, (2, 8)), (4, 0, 4, (1, 4)), (None, 3, 2, (3, 6)), (0, 0, 4, (0, 0)), (3, 0, 1, (3, 3))],
    ids=["rounds-up-to-whole-jobs", "exact", "jobs", "zero", "one-per-job"],
)
def test_workers_for(n, jobs, per_job, expected):
    assert workers_for(n, jobs, per_job) == expected


def test_small_helpers():
    assert worker_comment('user=a"b\n', "small") == "user=a_b_ dask=small"
    assert worker_job_name("sg-dask", "") == "sg-dask"
    assert worker_lifetime(60, 3) == (54, 3)
    with pytest.raises(ValueError, match="too short"):
        worker_lifetime(5, 4)
    assert build_cancel_workers_argv("/usr/bin/scancel", ["sudo", "-u", "demo"], "sg-dask-12", "demo") == [
        "sudo", "-u", "demo", "/usr/bin/scancel", "--name=sg-dask-12", "--user=demo",
    ]
