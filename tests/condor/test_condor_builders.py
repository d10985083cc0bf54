"""Pure builders: policy + options -> the HTCondor submit description, the env file, argv, job ads."""

import shlex
import subprocess

import pytest
from traitlets.config import Config

from science_gateway.core.policy import ResourcePolicy
from science_gateway.spawners.condor_submit import (
    HELD,
    IDLE,
    LAUNCHER,
    REMOVED,
    RUNNING,
    JobInfo,
    PartitionTarget,
    build_env_file,
    build_rm_argv,
    build_submit_description,
    build_write_env_argv,
    classad_string,
    condor_arguments,
    job_constraint,
    parse_cluster_id,
    parse_job_ad,
    parse_job_ads,
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


def description_for(groups, options, **overrides) -> dict[str, str]:
    request = ResourcePolicy(config=site_config()).validate(groups, options)
    kwargs = dict(
        command=["/venv/bin/jupyterhub-singleuser", "--ServerApp.port_retries=0"],
        env_file="/home/demo/.science-gateway/condor/x.env",
        job_name="science-gateway-jupyter",
        identity="demo@example.org",
        gateway="science-gateway",
        unix_user="demo",
        workdir="/home/demo",
        output="/home/demo/.sg-$(ClusterId).log",
    )
    kwargs.update(overrides)
    text = build_submit_description(request, **kwargs)
    assert text.endswith("\nqueue 1\n")
    lines = text.splitlines()[:-1]
    return dict(line.split(" = ", 1) for line in lines)


def test_resources_identity_and_walltime():
    d = description_for(["astro"], {"partition": "cpu", "cores": 2, "memory_gb": 8, "gpus": 1,
                                    "walltime_hours": 3, "account": "astro-2024"})
    assert (d["request_cpus"], d["request_memory"], d["request_gpus"]) == ("2", "8192", "1")
    assert d["accounting_group"] == "astro-2024" and d["accounting_group_user"] == "demo"
    assert d["+GatewayUser"] == '"demo@example.org"'
    assert d["+GatewayJob"] == '"science-gateway-jupyter"'
    assert d["+GatewayPartition"] == '"cpu"'
    assert d["periodic_remove"] == "(JobStatus == 2) && (time() - JobCurrentStartDate > 10800)"
    assert d["getenv"] == "False" and "environment" not in d
    assert d["executable"] == "/bin/sh" and d["initialdir"] == "/home/demo"
    assert "requirements" not in d


def test_no_gpus_no_account_means_no_such_lines():
    d = description_for(["students"], {"partition": "debug"})
    assert "request_gpus" not in d and "accounting_group" not in d
    assert d["request_cpus"] == "1"


def test_partition_maps_to_the_admins_requirements_and_accounting_group():
    target = PartitionTarget(requirements='TARGET.SiteGroup == "astro"', accounting_group="group_astro")
    d = description_for(["students"], {"partition": "debug"}, target=target, extra_requirements="TARGET.HasGateway")
    assert d["requirements"] == '(TARGET.SiteGroup == "astro") && (TARGET.HasGateway)'
    assert d["accounting_group"] == "group_astro"
    # an account the request names wins over the partition's group
    d = description_for(["astro"], {"account": "astro-2024"}, target=target)
    assert d["accounting_group"] == "astro-2024"


@pytest.mark.parametrize("identity, expected", [
    pytest.param('x"\n+Owner = "root', '"x__+Owner = _root"', id="quote-and-newline"),
    pytest.param("a\\b", '"a_b"', id="backslash"),
    pytest.param("http://cilogon.org/serverA/users/1234", '"http://cilogon.org/serverA/users/1234"', id="url"),
])
def test_identity_can_not_add_a_command(identity, expected):
    d = description_for(["students"], {"partition": "debug"}, identity=identity)
    assert d["+GatewayUser"] == expected


@pytest.mark.parametrize("field", ["workdir", "output", "env_file", "job_name", "unix_user"])
def test_a_newline_in_any_value_is_refused(field):
    with pytest.raises(ValueError, match="one line"):
        description_for(["astro"], {"account": "astro-2024"}, **{field: "x\nqueue 100"})


def test_admin_attributes_are_named_safely():
    d = description_for(["students"], {"partition": "debug"}, extra_attributes={"MaxJobRetirementTime": "0"})
    assert d["+MaxJobRetirementTime"] == "0"
    with pytest.raises(ValueError, match="attribute name"):
        description_for(["students"], {"partition": "debug"}, extra_attributes={"X = 1\n+Y": "2"})


def test_arguments_new_syntax_and_no_macros():
    assert condor_arguments(["a", "b c"]) == "\"'a' 'b c'\""
    assert condor_arguments(["it's"]) == "\"'it''s'\""
    assert condor_arguments(['say "hi"']) == "\"'say \"\"hi\"\"'\""
    assert condor_arguments(["$(HOME)"]) == "\"'$(DOLLAR)(HOME)'\""
    with pytest.raises(ValueError):
        condor_arguments(["a\nb"])


def test_the_launcher_is_the_first_arguments():
    d = description_for(["students"], {"partition": "debug"})
    assert d["arguments"].startswith("\"'-c' '" + LAUNCHER.replace('"', '""') + "' 'science-gateway-job' ")


def test_env_file_is_sh_quoted_and_names_checked(tmp_path):
    env = {"JUPYTERHUB_API_TOKEN": "secret", "ODD": "it's $HOME `id`\nline2", "PATH": "/bin"}
    text = build_env_file(env)
    path = tmp_path / "env"
    path.write_text(text)
    # what the launcher does: the variables come back exactly
    out = subprocess.run(["/bin/sh", "-c", LAUNCHER, "job", str(path), "/usr/bin/env", "-0"],
                         capture_output=True, check=True, env={}).stdout.decode()
    seen = dict(item.split("=", 1) for item in out.split("\0") if item)
    assert {k: seen[k] for k in env} == env
    assert not path.exists()  # the launcher deleted the file
    with pytest.raises(ValueError):
        build_env_file({"BAD NAME": "x"})


def test_argv_builders():
    prefix = ["/usr/bin/sudo", "-n", "-u", "demo"]
    assert build_rm_argv("/usr/bin/condor_rm", prefix, "12.0") == [*prefix, "/usr/bin/condor_rm", "12.0"]
    with pytest.raises(ValueError):
        build_rm_argv("/usr/bin/condor_rm", prefix, "12.0 -all")
    argv = build_write_env_argv(prefix, "/home/demo/.sg/x.env")
    assert argv[:5] == [*prefix, "/bin/sh"] and argv[-1] == "/home/demo/.sg/x.env"
    assert "/home/demo" not in argv[6]  # the path is an argument, never part of the script
    assert shlex.split(argv[6])  # a fixed script


def test_parse_cluster_id():
    assert parse_cluster_id("17.0 - 17.0\n") == "17.0"
    with pytest.raises(ValueError):
        parse_cluster_id("ERROR: Failed to connect to local queue manager\n")


def test_constraint_and_classad_strings():
    assert job_constraint("sg-1") == 'GatewayJob == "sg-1"'
    assert classad_string('a"b\\c') == '"a\\"b\\\\c"'


def test_job_ads_to_info_and_what_the_user_reads():
    ads = [
        {"ClusterId": 5, "ProcId": 0, "JobStatus": IDLE, "Owner": "demo", "GatewayPartition": "cpu",
         "LastRejMatchReason": "no match found"},
        {"ClusterId": 6, "ProcId": 0, "JobStatus": HELD, "HoldReason": "Error from slot1@vm: cannot exec"},
        {"ClusterId": 7, "ProcId": 0, "JobStatus": RUNNING, "RemoteHost": "slot1_3@node1.example"},
        {"ClusterId": 8, "ProcId": 0, "JobStatus": REMOVED, "RemoveReason": "via condor_rm (by user demo)"},
        {"JobStatus": 2},  # not a job
    ]
    jobs = parse_job_ads(ads)
    assert set(jobs) == {"5.0", "6.0", "7.0", "8.0"}
    assert jobs["5.0"].describe() == "Job 5.0 is idle in the HTCondor queue for partition cpu, not matched yet: no match found"
    assert jobs["6.0"].pending and jobs["6.0"].held
    assert jobs["6.0"].describe() == "Job 6.0 is held: Error from slot1@vm: cannot exec"
    assert jobs["7.0"].running and jobs["7.0"].host == "node1.example"
    assert jobs["8.0"].finished and jobs["8.0"].describe() == "Job 8.0 ended: removed (via condor_rm (by user demo))"
    assert parse_job_ad({"ClusterId": "x", "ProcId": 0, "JobStatus": 1}) is None
    assert JobInfo("9.0", IDLE).describe() == "Job 9.0 is idle in the HTCondor queue, waiting for a match"


# -- Dask on HTCondor: the kwargs of the kernel's HTCondorCluster -------------------------------

def dask_settings(**site):
    from science_gateway.core.presets import DaskPresets

    c = Config()
    c.DaskPresets.presets = {"small": {"partition": "cpu", "cores": 1, "memory_gb": 2, "walltime_minutes": 60,
                                       "workers_per_job": 2, "max_workers": 8}}
    for key, value in site.items():
        setattr(c.DaskPresets, key, value)
    return DaskPresets(config=c)


def test_condor_cluster_kwargs_carry_account_identity_walltime_and_partition():
    from science_gateway.dask.builders import condor_cluster_kwargs

    settings = dask_settings(interface="lo", condor_requirements={"cpu": 'TARGET.Site == "A"'})
    kwargs = condor_cluster_kwargs(
        "small", settings.presets["small"], settings, account="astro-2024",
        comment="science-gateway=sg user=alice@example.org", unix_user="alice", python="/env/bin/python",
        job_name="science-gateway-dask-12", log_directory="/home/alice/logs", tls_directory="/home/alice/tls",
    )
    assert (kwargs["cores"], kwargs["processes"], kwargs["memory"], kwargs["nanny"]) == (2, 2, "4GiB", True)
    assert kwargs["job_extra_directives"] == {
        "+GatewayJob": '"science-gateway-dask-12"',
        "+GatewayUser": '"science-gateway=sg user=alice@example.org dask=small"',
        "+GatewayPartition": '"cpu"',
        "periodic_remove": "(JobStatus == 2) && (time() - JobCurrentStartDate > 3600)",
        "accounting_group": "astro-2024",
        "accounting_group_user": "alice",
        "requirements": 'TARGET.Site == "A"',
    }
    assert kwargs["security"] is True and kwargs["shared_temp_directory"] == "/home/alice/tls"
    assert kwargs["interface"] == "lo" and kwargs["scheduler_options"] == {"dashboard_address": "127.0.0.1:0"}
    assert kwargs["worker_extra_args"] == ["--lifetime", "54m", "--lifetime-stagger", "3m"]
    with pytest.raises(ValueError, match="scheduler_host"):
        condor_cluster_kwargs("small", settings.presets["small"], dask_settings(), account="", comment="",
                              unix_user="alice", python="p", job_name="j", log_directory=None, tls_directory="t")


def test_condor_session_id_and_the_workers_rm():
    from science_gateway.dask.builders import condor_session_id
    from science_gateway.spawners.condor_submit import build_rm_workers_argv

    assert condor_session_id('MyType = "Job"\nClusterId = 42\nProcId = 0\n') == "42"
    assert condor_session_id("ProcId = 0\n") == ""
    assert build_rm_workers_argv("/usr/bin/condor_rm", ["sudo"], "science-gateway-dask-42") == [
        "sudo", "/usr/bin/condor_rm", "-constraint", 'GatewayJob == "science-gateway-dask-42"']
    with pytest.raises(ValueError):
        build_rm_workers_argv("/usr/bin/condor_rm", [], 'x" || true || "')
