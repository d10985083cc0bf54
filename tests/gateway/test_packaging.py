"""The built wheel is what users install: one namespace, the server extension enabled, scripts run."""

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import science_gateway

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel scripts/test built and installed (SG_WHEEL), or one built here."""
    if os.environ.get("SG_WHEEL"):
        return Path(os.environ["SG_WHEEL"])
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
        check=True,
    )
    return next(out.glob("science_gateway-*.whl"))


def test_wheel_installs_one_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.startswith("science_gateway")} == set(), top
    for module in ("science_gateway/hub/demo_auth.py", "science_gateway/spawners/local.py", "science_gateway/jupyter_ext/app.py"):
        assert module in names
    assert "science_gateway/jupyter_ext/demo_data/catalog.json" in names
    assert any(n.endswith("etc/jupyter/jupyter_server_config.d/science_gateway.json") for n in names)
    assert any(n.endswith("etc/jupyter/labconfig/page_config.d/science_gateway.json") for n in names)


def test_tests_run_against_the_installed_package():
    installed = Path(science_gateway.__file__).resolve().parent
    assert installed.name == "science_gateway" and installed.parent.name == "site-packages", installed


def test_entry_points_resolve():
    from importlib.metadata import entry_points

    found = {
        (ep.group, ep.name): ep.load()
        for group in ("jupyterhub.authenticators", "jupyterhub.spawners")
        for ep in entry_points(group=group)
        if ep.value.startswith("science_gateway.")
    }
    assert found[("jupyterhub.authenticators", "science-gateway-demo")].__name__ == "DemoAuthenticator"
    assert found[("jupyterhub.spawners", "science-gateway-local")].__name__ == "LocalSpawner"


def test_server_extension_is_enabled_by_the_data_file():
    out = subprocess.run([BIN / "jupyter", "server", "extension", "list"], capture_output=True, text=True, check=True)
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)
    assert "science_gateway.jupyter_ext enabled" in text, text
    assert "science_gateway.jupyter_ext 0.1.0 OK" in text or "science_gateway.jupyter_ext  OK" in text, text
    # the side panel's clusters (the dask extra)
    assert "science_gateway.dask.server enabled" in text, text


def test_the_side_panel_is_in_the_wheel_and_enabled_after_install(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    shipped = [n for n in names if "/share/jupyter/labextensions/science-gateway-panel/" in n]
    assert any(n.endswith("/package.json") for n in shipped) and any(n.endswith("/install.json") for n in shipped)
    assert any(re.search(r"/static/remoteEntry\.[0-9a-f]+\.js$", n) for n in shipped), shipped
    # prebuilt: nothing of the TypeScript sources or node_modules in the wheel
    assert not [n for n in names if "node_modules" in n or n.endswith(".ts")]
    out = subprocess.run([BIN / "jupyter", "labextension", "list"], capture_output=True, text=True, check=True)
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)
    line = next((row for row in text.splitlines() if "science-gateway-panel" in row), "")
    assert re.search(r"science-gateway-panel v0\.1\.0 enabled\s+OK \(python, science-gateway\)", line), text


@pytest.mark.parametrize("script", ["science-gateway-hash-password", "science-gateway-config"])
def test_console_scripts_answer_help(script):
    out = subprocess.run([BIN / script, "--help"], capture_output=True, text=True, check=True)
    assert "usage:" in out.stdout


def test_hash_password_script_makes_a_hash_the_authenticator_accepts():
    from science_gateway.hub.passwords import verify_password

    out = subprocess.run(
        [BIN / "science-gateway-hash-password", "--stdin"], input="s3cret\n", capture_output=True, text=True, check=True
    )
    assert verify_password("s3cret", out.stdout.strip())
    assert not verify_password("other", out.stdout.strip())


def test_importing_the_package_has_no_side_effects():
    code = (
        "import sys, science_gateway, science_gateway.hub, science_gateway.spawners, science_gateway.jupyter_ext;"
        "print(sorted(m for m in sys.modules if m.startswith(('jupyterhub', 'jupyter_server', 'tornado'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


#: source folder -> the package it installs as (pyproject.toml's package-dir)
PACKAGE_ROOTS = {
    "gateway": "science_gateway",
    "core": "science_gateway/core",
    "hub": "science_gateway/hub",
    "spawners": "science_gateway/spawners",
    "jupyter_ext": "science_gateway/jupyter_ext",
}


def source_modules() -> list[str]:
    """Every .py file of every package folder (a folder with an __init__.py), as its wheel path."""
    found = []
    for folder, package in PACKAGE_ROOTS.items():
        root = REPO / folder
        for init in root.rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            for module in init.parent.glob("*.py"):
                found.append(f"{package}/{module.relative_to(root).as_posix()}")
    return sorted(found)


def test_every_package_folder_is_in_the_wheel(wheel):
    """pyproject.toml lists packages by hand: a new folder with an __init__.py must be added there."""
    modules = source_modules()
    assert "science_gateway/jupyter_ext/catalog/__init__.py" in modules, modules  # the walk sees nested packages
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [m for m in modules if m not in names]
    assert not missing, (
        f"{len(missing)} source modules are not in {wheel.name}: {missing[:10]}; add their package to "
        "[tool.setuptools] packages (and package-dir if it is a new top-level folder) in pyproject.toml"
    )


SERVICES = sorted(p for p in (REPO / "scripts" / "services").iterdir() if p.is_file() and os.access(p, os.X_OK))


def test_there_are_service_scripts():
    assert {p.name for p in SERVICES} >= {"slurm", "rucio", "oidc"}


@pytest.mark.parametrize("script", SERVICES, ids=lambda p: p.name)
def test_readme_says_how_to_stop_each_service_and_the_script_can(script):
    """README "What ./scripts/test does to the machine" names each service's stop; the script has
    install, start, stop and status (read from its source: the services are shared, never run here)."""
    readme = (REPO / "README.md").read_text()
    assert f"`scripts/services/{script.name} stop`" in readme
    source = script.read_text()
    for command in ("install", "start", "stop", "status"):
        assert re.search(rf"^\s*{command}\)", source, re.M), f"{script.name} has no {command} command"


def test_readme_lists_the_unix_accounts_the_slurm_script_creates():
    source = (REPO / "scripts" / "services" / "slurm").read_text()
    users = re.search(r'TEST_USERS="\$\{SG_SLURM_TEST_USERS:-([^}]*)\}"', source).group(1).split()
    section = (REPO / "README.md").read_text().split("What `./scripts/test` as root does to the machine", 1)[1]
    accounts = section.split("unix accounts", 1)[1].split("\n", 1)[0]
    assert users and all(f"`{user}`" in accounts for user in users), (users, accounts)
