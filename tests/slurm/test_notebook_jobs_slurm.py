"""Notebooks as batch jobs on the real Slurm, from a kernel in a real single-user server behind a real hub.

The user's kernel runs ``science_gateway.jobs``: a parameterised notebook as a Slurm job and as a
3-task job array (one sbatch), the executed notebooks checked cell by cell; cancel; hostile
parameters refused before sbatch; the account the user chose and their identity on the job
(scontrol, and sacct when accounting answers); an admin's pipeline launched on a dataset.
"""

import json
import os
import pwd
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from sgtest.hub import HubSession, RunningHub, wait_for
from sgtest.kernel import KernelError, RemoteKernel
from sgtest.slurm import USERS, SlurmFixture

pytestmark = [pytest.mark.slurm, pytest.mark.hub]

NOTEBOOK = "nbjobs-test.ipynb"


def notebook_json() -> dict:
    def code(source, tags=()):
        return {"cell_type": "code", "execution_count": None, "id": f"c{abs(hash(source)) % 10**8}",
                "metadata": {"tags": list(tags)}, "outputs": [], "source": source}

    return {
        "cells": [
            {"cell_type": "markdown", "id": "m0", "metadata": {}, "source": "# A parameterised notebook"},
            code('dataset = "none"\nfactor = 1\nlabel = ""\nsleep = 0', tags=["parameters"]),
            code("import json, os, time\ntime.sleep(sleep)"),
            code('print("RESULT " + json.dumps({"dataset": dataset, "value": factor * 2, "label": label,\n'
                 '    "job": os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID"),\n'
                 '    "task": os.environ.get("SLURM_ARRAY_TASK_ID")}))'),
        ],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }


def put_notebook(user: str, name: str = NOTEBOOK) -> str:
    account = pwd.getpwnam(user)
    path = Path(account.pw_dir) / name
    path.write_text(json.dumps(notebook_json()))
    os.chown(path, account.pw_uid, account.pw_gid)
    return str(path)


@pytest.fixture(scope="module")
def slurm():
    fixture = SlurmFixture()
    yield fixture
    subprocess.run(["scancel", f"--name={fixture.job_name}-nb"], timeout=30, check=False)
    fixture.cleanup()


@pytest.fixture(scope="module")
def nb_hub(slurm, tmp_path_factory):
    pipeline = slurm.dir / "double.ipynb"
    pipeline.write_text(json.dumps(notebook_json()))
    os.chmod(pipeline, 0o644)
    config = slurm.hub_config()
    config["NotebookJobs"] = {
        "job_name": f"{slurm.job_name}-nb",
        # the wrappers count the kernel's calls and run the real commands
        "submit_command": str(slurm.dir / "sbatch"),
        "query_command": str(slurm.dir / "squeue"),
        "cancel_command": str(slurm.dir / "scancel"),
        "pipelines": {
            "double": {"description": "Doubles a factor for a dataset", "notebook": str(pipeline), "groups": ["astro"],
                       "parameters": {"dataset": {"type": "dataset", "required": True},
                                      "factor": {"type": "int", "default": 5}},
                       "memory_gb": 1},
            "teach": {"notebook": str(pipeline), "groups": ["students"], "parameters": {"dataset": {"type": "str"}}},
        },
    }
    with RunningHub(tmp_path_factory.mktemp("nbhub"), config=config) as hub:
        yield hub


@pytest.fixture(scope="module")
def demo_kernel(slurm, nb_hub):
    session = HubSession(nb_hub)
    assert session.login("demo", USERS["demo"][0]).status_code == 200
    session.start_server("demo", timeout=120, options={"partition": "cpu", "memory_gb": 2, "account": "astro-dev"})
    notebook = put_notebook("demo")
    home = Path(pwd.getpwnam("demo").pw_dir)
    records, runs = home / ".science-gateway" / "runs", home / "batch-runs"
    before = set(records.glob("*.json")) | set(runs.glob("*"))
    kernel = RemoteKernel(session, "demo")
    kernel.start()
    yield session, kernel
    # the runs this module made (records, executed notebooks), and its notebook, go
    for path in (set(records.glob("*.json")) | set(runs.glob("*"))) - before:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    os.unlink(notebook)
    r = session.http.delete(f"{nb_hub.url}/hub/api/users/demo/server", headers=session.xsrf_headers(), timeout=60)
    assert r.status_code in (202, 204), r.text
    wait_for(lambda: "demo" not in slurm.jobs(), 60, what="the session job to end")
    session.http.close()  # its pooled connections: closed here, not by a later test's garbage collection


async def run_json(kernel, code: str, timeout: float = 240) -> dict:
    out = await kernel.execute(textwrap.dedent(code), timeout=timeout)
    return json.loads(out.strip().splitlines()[-1])


def executed(path: str) -> tuple[dict, dict]:
    """(the RESULT the notebook printed, the parameters papermill injected) of an executed notebook."""
    nb = json.loads(Path(path).read_text())
    injected = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert len(injected) == 1, "papermill injected one parameters cell"
    texts = [o.get("text", "") for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    lines = [line for text in texts for line in ("".join(text) if isinstance(text, list) else text).splitlines()]
    result = json.loads(next(line for line in lines if line.startswith("RESULT "))[len("RESULT "):])
    assert all((c["metadata"].get("papermill") or {}).get("status") == "completed" for c in nb["cells"])
    return result, "".join(injected[0]["source"])


def job_fields(job_id: str) -> str:
    return subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=20,
                          check=True).stdout


def accounting() -> bool:
    """Whether this Slurm records jobs in slurmdbd (then sacct must show ours)."""
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=20).stdout
    return "accounting_storage/slurmdbd" in out


def sacct_fields(job_id: str, tasks: int = 1) -> list[list[str]]:
    """sacct's JobID, Account and Comment of the job's allocations (``tasks`` of them, waited
    for: slurmdbd records a job a moment after it ends); [] without accounting."""
    if not accounting():
        return []
    rows = []

    def recorded():
        nonlocal rows
        out = subprocess.run(["sacct", "-n", "-P", "-X", "-j", job_id, "--format=JobID,Account,Comment%300"],
                             capture_output=True, text=True, timeout=20)
        rows = [line.split("|") for line in out.stdout.splitlines() if line.strip()]
        return len(rows) >= tasks

    wait_for(recorded, 30, interval=1, what=f"sacct to show job {job_id}")
    return rows


SUBMIT = """
import json
from science_gateway import jobs
run = jobs.submit({notebook!r}, {params!r}, **{kwargs!r})
status = run.wait(timeout=200, interval=1)
print(json.dumps({{"record": run.record, "status": status}}))
"""


async def test_a_notebook_runs_as_a_job_and_as_a_3_task_array_with_account_and_identity(slurm, demo_kernel):
    session, kernel = demo_kernel
    before = slurm.calls("sbatch")
    # one job, in the session's account (astro-dev), with a shell-looking value that stays text
    label = "$(touch /tmp/nbjobs-pwned) `id`"
    got = await run_json(kernel, SUBMIT.format(notebook=NOTEBOOK, params={"factor": 21, "label": label}, kwargs={}))
    record, status = got["record"], got["status"]
    assert slurm.calls("sbatch") - before == 1
    assert status["state"] == "COMPLETED", status
    assert status["progress"] == 1.0 and status["tasks"][0]["cells_done"] == status["tasks"][0]["cells"] == 5
    result, injected = executed(record["tasks"][0]["output"])
    assert result == {"dataset": "none", "value": 42, "label": label, "job": record["job_id"], "task": None}
    assert "factor = 21" in injected
    assert not os.path.exists("/tmp/nbjobs-pwned")
    assert record["account"] == "astro-dev" and record["partition"] == "cpu" and not record["array"]
    comment = f"science-gateway=science-gateway user=demo notebook={record['id']}"
    assert record["comment"] == comment
    shown = job_fields(record["job_id"])
    assert "Account=astro-dev" in shown and f"Comment={comment}" in shown and "UserId=demo(" in shown
    for _job, account, job_comment in sacct_fields(record["job_id"]):
        assert (account, job_comment) == ("astro-dev", comment)
    # the record, under the user's home, says what ran
    home = pwd.getpwnam("demo").pw_dir
    saved = json.loads(Path(f"{home}/.science-gateway/runs/{record['id']}.json").read_text())
    assert saved["job_ids"] == [record["job_id"]] and saved["parameters"] == {"factor": 21, "label": label}
    assert saved["environment"]["papermill"] and saved["environment"]["science-gateway"] == "0.1.0"
    assert saved["environment"]["python"].count(".") == 2 and saved["final"]["state"] == "COMPLETED"
    # the executed notebook opens in JupyterLab: its path is relative to the Jupyter root
    output_path = record["tasks"][0]["output_path"]
    assert output_path == f"batch-runs/{record['id']}/nbjobs-test-0.ipynb"
    opened = session.get(f"/user/demo/api/contents/{output_path}")
    assert opened.status_code == 200 and opened.json()["type"] == "notebook"

    # a 3-task array over 3 datasets, charged to another account the user's groups allow: one sbatch
    before = slurm.calls("sbatch")
    inputs = ["demo:run2024.raw.0001", "demo:run2024.raw.0002", "demo:run2024.raw.0003"]
    got = await run_json(kernel, SUBMIT.format(notebook=NOTEBOOK, params={"factor": 4},
                                               kwargs={"inputs": inputs, "account": "astro-2024"}))
    record, status = got["record"], got["status"]
    assert slurm.calls("sbatch") - before == 1
    assert status["state"] == "COMPLETED", status
    assert record["array"] and record["job_ids"] == [f"{record['job_id']}_{i}" for i in range(3)]
    for task, dataset in enumerate(inputs):
        result, injected = executed(record["tasks"][task]["output"])
        assert result == {"dataset": dataset, "value": 8, "label": "", "job": record["job_id"], "task": str(task)}
        assert f'dataset = "{dataset}"' in injected
    comment = f"science-gateway=science-gateway user=demo notebook={record['id']}"
    for job in record["job_ids"]:
        shown = job_fields(job)
        assert "Account=astro-2024" in shown and f"Comment={comment}" in shown
    for _job, account, job_comment in sacct_fields(record["job_id"], tasks=3):
        assert (account, job_comment) == ("astro-2024", comment)
    # runs() lists both, newest first
    listed = await run_json(kernel, "import json\nfrom science_gateway import jobs\n"
                                    "print(json.dumps([r.id for r in jobs.runs()]))")
    assert listed[0] == record["id"] and len(listed) >= 2


async def test_cancel_and_hostile_parameters_refused_before_sbatch(slurm, demo_kernel):
    session, kernel = demo_kernel
    # a long run: watch it start (papermill writes the executed notebook cell by cell), then cancel it
    got = await run_json(kernel, f"""
        import json, time
        from science_gateway import jobs
        run = jobs.submit({NOTEBOOK!r}, {{"sleep": 600}})
        deadline = time.monotonic() + 120
        while True:
            status = run.status()
            if status["state"] == "RUNNING" and status["tasks"][0]["cells_done"] >= 3 or time.monotonic() > deadline:
                break
            time.sleep(1)
        running = status
        run.cancel()
        print(json.dumps({{"running": running, "ended": run.wait(timeout=60, interval=1), "job_id": run.job_id}}))
    """)
    running = got["running"]
    assert running["state"] == "RUNNING" and 0 < running["progress"] < 1, running
    assert got["ended"]["state"] == "CANCELLED", got["ended"]
    wait_for(lambda: slurm.job_state(got["job_id"]).startswith("CANCELLED"), 30, what="the job to be cancelled")

    # hostile names and values, resources beyond policy: refused before sbatch, with a short quote
    before, jobs_before = slurm.calls("sbatch"), set(slurm.job_ids())
    refused = {
        "{'x; rm -rf ~': 1}": "parameter name 'x; rm -rf ~' is refused",
        "{'__class__': 1}": "parameter name '__class__' is refused",
        "{'x': '1\\nimport os; os.system(\"id\")'}": "holds a control character",
        "{'x': 'A' * 100000}": "is 100000 characters long",
        "{'x': float('inf')}": "is not a finite number",
    }
    for params, message in refused.items():
        with pytest.raises(KernelError) as info:
            await kernel.execute(f"from science_gateway import jobs; jobs.submit({NOTEBOOK!r}, {params})")
        assert "ParameterError" in str(info.value) and message in str(info.value), str(info.value)[-500:]
        assert "A" * 200 not in str(info.value)
    for call, message in {
        f"jobs.submit({NOTEBOOK!r}, inputs=['ok', 'bad\\x00'])": "holds a control character",
        f"jobs.submit({NOTEBOOK!r}, cores=64)": "cores on partition 'cpu' must be 1 to 2",
        f"jobs.submit({NOTEBOOK!r}, account='teaching')": "account 'teaching' is not allowed",
        "jobs.submit('../../etc/shadow.ipynb')": "no notebook",
        "jobs.launch('double', '$(id):x')": "scope '$(id)' must be",
    }.items():
        with pytest.raises(KernelError) as info:
            await kernel.execute(f"from science_gateway import jobs; {call}")
        assert message in str(info.value), str(info.value)[-500:]
    assert slurm.calls("sbatch") == before
    assert set(slurm.job_ids()) <= jobs_before


async def test_a_pipeline_is_listed_for_its_group_and_launched_on_a_dataset(slurm, demo_kernel):
    session, kernel = demo_kernel
    got = await run_json(kernel, """
        import json
        from science_gateway import jobs
        listed = jobs.pipelines()
        run = jobs.launch("double", "demo:run2024.calib.0001", factor=7)
        print(json.dumps({"listed": listed, "status": run.wait(timeout=200, interval=1), "record": run.record}))
    """)
    assert sorted(got["listed"]) == ["double"]  # "teach" is for students only
    assert got["listed"]["double"]["parameters"]["factor"] == {"type": "int", "default": 5, "required": False,
                                                               "description": ""}
    assert got["status"]["state"] == "COMPLETED", got["status"]
    record = got["record"]
    assert record["pipeline"] == "double" and record["memory_gb"] == 1
    result, _ = executed(record["tasks"][0]["output"])
    assert result["dataset"] == "demo:run2024.calib.0001" and result["value"] == 14
    # the widget over the same API: a pipeline launch from its fields, the run in its list
    got = await run_json(kernel, """
        import json
        from science_gateway.widgets import NotebookRunner
        w = NotebookRunner(autostart=False)
        w.what.value = "double"
        w.dataset.value = "demo:run2024.raw.0002"
        w.parameters.value = '{"factor": 2}'
        run = w.submit()
        status = run.wait(timeout=200, interval=1)
        w.refresh()
        print(json.dumps({"error": w.error.value, "state": status["state"], "rows": len(w.runs_box.children),
                          "options": list(w.what.options)}))
    """)
    assert got["error"] == "" and got["state"] == "COMPLETED" and got["rows"] >= 1, got
    assert got["options"][1:] == ["double"]
