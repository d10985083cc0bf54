"""Notebook batch jobs, the pure part: parameter checks, pipelines config, the job script and argv."""

import json
import shlex

import pytest
from traitlets.config import Config

from science_gateway.core.batch import (
    ENV_VAR,
    NotebookJobs,
    ParameterError,
    UserBatchConfig,
    batch_environment,
    check_parameters,
)
from science_gateway.core.policy import ResourcePolicy, ResourceRequest
from science_gateway.job_script import (
    TaskState,
    build_job_script,
    build_sbatch_argv,
    build_squeue_argv,
    notebook_progress,
    parse_squeue,
    run_state,
    task_state,
)
from sgtest.slurm import POLICY

GOOD = [
    ({}, {}),
    ({"threshold": 0.5, "n": 3, "name": "run 1", "flag": True, "none": None}, None),
    ({"items": [1, "a", [2.5]], "opts": {"k": "v"}}, None),
    ({"shellish": "$(touch /tmp/x); `id` && rm -rf ~"}, None),  # inert: never reaches a shell
]


@pytest.mark.parametrize("params,expected", GOOD, ids=["empty", "scalars", "nested", "shell-looking-text"])
def test_plain_parameters_pass(params, expected):
    assert check_parameters(params) == (params if expected is None else expected)


HOSTILE = [
    ({"x; rm -rf ~": 1}, "parameter name 'x; rm -rf ~' is refused"),
    ({"__import__": 1}, "parameter name '__import__' is refused"),
    ({"import": 1}, "parameter name 'import' is refused"),
    ({"1x": 1}, "parameter name '1x' is refused"),
    ({"a" * 100: 1}, "parameter name 'aaaa"),
    ({"x": "1\nimport os; os.system('id')"}, "holds a control character"),
    ({"x": "a\x1b[2J"}, "holds a control character"),
    ({"x": "y" * 10000}, "is 10000 characters long"),
    ({"x": float("nan")}, "is not a finite number"),
    ({"x": 2**70}, "out of range"),
    ({"x": object()}, "values are text, numbers"),
    ({"x": [[[[[[1]]]]]]}, "nested deeper"),
    ({"x": {1: 2}}, "is not text"),
    ({f"p{i}": i for i in range(100)}, "at most 64"),
]


@pytest.mark.parametrize("params,message", HOSTILE, ids=[
    "name-shell", "name-dunder", "name-keyword", "name-digit", "name-long", "value-newline-code", "value-escape",
    "value-huge", "value-nan", "value-bigint", "value-object", "value-deep", "value-dict-key", "too-many"])
def test_hostile_parameters_are_refused_with_a_short_quote(params, message):
    with pytest.raises(ParameterError) as info:
        check_parameters(params)
    assert message in str(info.value)
    assert len(str(info.value)) < 400  # a short prefix of what was refused, never all of it


PIPELINES = {
    "calibrate": {
        "description": "Calibrate one raw dataset",
        "notebook": "/opt/pipelines/calibrate.ipynb",
        "groups": ["astro"],
        "parameters": {
            "dataset": {"type": "dataset", "required": True},
            "threshold": {"type": "float", "default": 0.5},
            "passes": {"type": "int", "default": 1},
        },
    },
    "teach": {"notebook": "/opt/pipelines/teach.ipynb", "groups": ["students"],
              "parameters": {"dataset": {"type": "str"}}},
}


def jobs_from(config: dict) -> NotebookJobs:
    return NotebookJobs(config=Config({"NotebookJobs": config}))


def test_pipelines_are_typed_and_filtered_by_group():
    jobs = jobs_from({"pipelines": PIPELINES})
    assert sorted(jobs.allowed(["astro"])) == ["calibrate"]
    assert sorted(jobs.allowed(["students"])) == ["teach"]
    policy = ResourcePolicy(config=Config({"ResourcePolicy": {"groups": POLICY}}))
    env = batch_environment(jobs, groups=["astro"], policy=policy)
    view = UserBatchConfig.from_view(json.loads(env[ENV_VAR]))
    assert sorted(view.pipelines) == ["calibrate"]
    # the user's groups' policy only, rebuilt into the same ResourcePolicy in the kernel
    assert sorted(view.policy.groups) == ["astro"]
    assert view.policy.validate(["astro"], {"account": "astro-dev"}).account == "astro-dev"
    pipeline = view.pipeline("calibrate")
    assert pipeline.resolve("calibrate", "demo:run2024.raw.0001", {"threshold": "0.7"}) == {
        "dataset": "demo:run2024.raw.0001", "threshold": 0.7, "passes": 1}
    with pytest.raises(ParameterError, match="has no parameter 'evil'"):
        pipeline.resolve("calibrate", "demo:x", {"evil": 1})
    with pytest.raises(ParameterError, match="needs a value for 'dataset'"):
        pipeline.resolve("calibrate", None, {})
    with pytest.raises(ParameterError, match="must look like 'scope:name'"):
        pipeline.resolve("calibrate", "../../etc/passwd", {})
    with pytest.raises(ParameterError, match="must be int"):
        pipeline.resolve("calibrate", "demo:x", {"passes": "3; rm"})
    with pytest.raises(ParameterError, match="no pipeline 'teach' for you; pipelines you may launch: calibrate"):
        view.pipeline("teach")


@pytest.mark.parametrize("bad,message", [
    ({"x": {"notebook": "relative.ipynb", "parameters": {"dataset": {}}}}, "must be an absolute path"),
    ({"x": {"notebook": "/a.ipynb", "parameters": {"dataset": {"typ": "str"}}}}, "unknown keys ['typ']"),
    ({"x": {"notebook": "/a.ipynb", "parameters": {}}}, "dataset_parameter 'dataset' is not in its parameters"),
    ({"x y": {"notebook": "/a.ipynb", "parameters": {"dataset": {}}}}, "pipeline name 'x y'"),
], ids=["relative-notebook", "typo", "no-dataset-parameter", "bad-name"])
def test_a_wrong_pipeline_fails_with_the_key_named(bad, message):
    with pytest.raises(Exception) as info:
        jobs_from({"pipelines": bad})
    assert message in str(info.value)


REQUEST = ResourceRequest(partition="cpu", cores=1, memory_gb=2, gpus=0, walltime_hours=1, account="astro-dev")


def test_the_sbatch_argv_of_an_array_is_one_call_with_account_and_identity():
    argv = build_sbatch_argv(REQUEST, sbatch="sbatch", job_name="nb", comment="science-gateway=sg user=demo notebook=r1",
                             run_dir="/home/demo/batch-runs/r1", tasks=3, max_parallel=2, export=["PATH", "HOME"])
    assert argv == [
        "sbatch", "--parsable", "--job-name=nb", "--comment=science-gateway=sg user=demo notebook=r1",
        "--partition=cpu", "--nodes=1", "--ntasks=1", "--cpus-per-task=1", "--mem=2G", "--time=01:00:00",
        "--output=/home/demo/batch-runs/r1/slurm-%A_%a.out", "--chdir=/home/demo/batch-runs/r1",
        "--export=HOME,PATH", "--account=astro-dev", "--array=0-2%2",
    ]
    single = build_sbatch_argv(REQUEST, sbatch="sbatch", job_name="nb", comment="c", run_dir="/r", tasks=None)
    assert "--output=/r/slurm-%j.out" in single and not any(a.startswith("--array") for a in single)


def test_the_job_script_quotes_paths_and_holds_no_parameters():
    script = build_job_script(python="/venv/bin/python", notebook="/home/demo/my notebook.ipynb",
                              output_prefix="/home/demo/batch-runs/r1/my notebook-", run_dir="/home/demo/batch-runs/r1",
                              array=True, prologue=["module load x"])
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash" and "module load x" in lines
    papermill = next(line for line in lines if "notebook_task" in line)
    words = shlex.split(papermill.replace('"${SLURM_ARRAY_TASK_ID}"', "7"))
    assert words == ["/venv/bin/python", "-m", "science_gateway.notebook_task", "/home/demo/my notebook.ipynb",
                     "/home/demo/batch-runs/r1/my notebook-7.ipynb", "/home/demo/batch-runs/r1/params-7.json",
                     "--transport=ipc"]
    assert "exit-" in script
    single = build_job_script(python="/p", notebook="/n.ipynb", output_prefix="/r/n-", run_dir="/r", array=False,
                              kernel_name="python3", transport="tcp")
    assert "SLURM_ARRAY_TASK_ID" not in single and "/r/n-0.ipynb" in single
    assert "--transport=tcp --kernel=python3" in single
    with pytest.raises(ValueError):
        build_job_script(python="/p", notebook="/n.ipynb", output_prefix="/r/n-", run_dir="/r", array=False,
                         transport="udp; id")


def test_the_task_runs_papermill_with_its_kernel_on_ipc_sockets(tmp_path):
    """The job's own command, here in this process's Python: parameters from the file, the kernel over IPC."""
    import subprocess
    import sys

    notebook = tmp_path / "nb.ipynb"
    notebook.write_text(json.dumps({
        "cells": [{"cell_type": "code", "execution_count": None, "id": "p", "metadata": {"tags": ["parameters"]},
                   "outputs": [], "source": "x = 1"},
                  {"cell_type": "code", "execution_count": None, "id": "c", "metadata": {}, "outputs": [],
                   "source": "import json, sys\nconnection = json.load(open(sys.argv[sys.argv.index('-f') + 1]))\n"
                             "print(json.dumps([x * 2, connection['transport']]))"}],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5}))
    params = tmp_path / "params-0.json"
    params.write_text(json.dumps({"x": 21}))
    out = tmp_path / "out.ipynb"
    subprocess.run([sys.executable, "-m", "science_gateway.notebook_task", str(notebook), str(out), str(params)],
                   check=True, timeout=120, capture_output=True)
    executed = json.loads(out.read_text())
    assert json.loads("".join(executed["cells"][-1]["outputs"][0]["text"])) == [42, "ipc"]
    assert notebook_progress(out.read_text()) == (3, 3)  # the injected parameters cell too
    # a failing cell: exit 1 with the error, the executed notebook saved up to it
    params.write_text(json.dumps({"x": "text"}))
    notebook.write_text(notebook.read_text().replace("x * 2", "x / 2"))
    failed = subprocess.run([sys.executable, "-m", "science_gateway.notebook_task", str(notebook), str(out),
                             str(params)], timeout=120, capture_output=True, text=True)
    assert failed.returncode == 1 and "TypeError" in failed.stderr


def test_squeue_states_and_progress():
    assert build_squeue_argv("squeue", "42") == ["squeue", "--noheader", "--array", "--jobs=42", "--states=all",
                                                 "--format=%i|%T|%r"]
    with pytest.raises(ValueError):
        build_squeue_argv("squeue", "42,43")
    listed = parse_squeue("42_0|RUNNING|None\n42_1|PENDING|Resources\n43_0|RUNNING|None\ngarbage\n", "42")
    assert sorted(listed) == [0, 1] and listed[1].reason == "Resources"
    assert task_state(listed[0], None, False, 0).state == "RUNNING"
    assert task_state(None, "0\n", False, 2).state == "COMPLETED"
    assert task_state(None, "1\n", False, 2).state == "FAILED"
    assert task_state(None, "143\n", True, 2).state == "CANCELLED"
    assert task_state(TaskState(0, "CANCELLED by 1000"), None, False, 0).state == "CANCELLED"
    assert task_state(None, None, False, 0).state == "UNKNOWN"
    assert run_state([TaskState(0, "COMPLETED"), TaskState(1, "RUNNING")]) == "RUNNING"
    assert run_state([TaskState(0, "COMPLETED"), TaskState(1, "FAILED")]) == "FAILED"
    assert run_state([TaskState(0, "COMPLETED")] * 3) == "COMPLETED"
    nb = {"cells": [{"metadata": {"papermill": {"status": "completed"}}}, {"metadata": {"papermill": {"status": "running"}}},
                    {"metadata": {}}]}
    assert notebook_progress(json.dumps(nb)) == (1, 3)
    assert notebook_progress(None) == (0, 0) and notebook_progress("{half") == (0, 0)


def test_widget_fields_and_rows():
    from science_gateway.widgets.runs import parse_inputs, parse_parameters, run_row

    assert parse_parameters(' {"a": 1} ') == {"a": 1} and parse_parameters("") == {}
    with pytest.raises(ValueError, match="not JSON"):
        parse_parameters("{a: 1}")
    assert parse_inputs("demo:a\n\n demo:b \n") == ["demo:a", "demo:b"] and parse_inputs("  ") is None
    row = run_row({"state": "RUNNING", "progress": 0.5, "tasks": [
        {"task": 0, "state": "COMPLETED", "reason": "", "cells": 4, "output_path": "batch-runs/r/nb-0.ipynb"},
        {"task": 1, "state": "RUNNING", "reason": "", "cells": 0, "output_path": "batch-runs/r/nb-1.ipynb"},
    ]}, "/user/demo/")
    assert row["words"] == "running: 1/2 tasks ended" and row["can_cancel"]
    assert row["links"] == [(0, "/user/demo/lab/tree/batch-runs/r/nb-0.ipynb")]


def test_a_pipeline_typo_stops_the_hub_at_start_up():
    from science_gateway.hub.config import check_policy

    check_policy(Config({"NotebookJobs": {"pipelines": PIPELINES}}))
    with pytest.raises(ValueError, match=r"NotebookJobs.pipeline \(did you mean pipelines\?\)"):
        check_policy(Config({"NotebookJobs": {"pipeline": PIPELINES}}))
    with pytest.raises(ValueError, match=r"NotebookJobs: pipeline 'calibrate': parameter 'dataset': unknown keys \['kind'\]"):
        check_policy(Config({"NotebookJobs": {"pipelines": {"calibrate": {
            "notebook": "/a.ipynb", "parameters": {"dataset": {"kind": "dataset"}}}}}}))


def test_outside_a_slurm_session_a_run_is_refused_saying_why(tmp_path):
    from science_gateway import jobs

    notebook = tmp_path / "nb.ipynb"
    notebook.write_text("{}")
    with pytest.raises(jobs.JobError, match="notebook batch jobs need a Slurm session of the gateway"):
        jobs.submit(str(notebook), {"x": 1}, environ={})
    with pytest.raises(ParameterError):  # parameters are checked first, whatever the session
        jobs.submit(str(notebook), {"x y": 1}, environ={})
    assert jobs.pipelines(environ={}) == {}
    with pytest.raises(jobs.JobError, match="is not one the gateway makes"):
        jobs.get("../../etc/passwd", environ={})
