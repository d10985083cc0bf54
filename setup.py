"""Builds the JupyterLab side panel into the wheel; everything else is in pyproject.toml.

The panel (``labextension/``, TypeScript) is built with JupyterLab's own builder from the npm
registry before setuptools reads ``pyproject.toml``, whose ``data-files`` ship the result as a
prebuilt JupyterLab extension (``share/jupyter/labextensions/science-gateway-panel``, from ``labextension/prebuilt``): users
install nothing else. The build is skipped while its output is newer than every source file.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "labextension"
OUTPUT = SOURCE / "prebuilt"
#: the setup.py commands that put files into a wheel or an installation (not metadata queries)
BUILDING = {"bdist_wheel", "build", "build_py", "install", "editable_wheel", "develop"}


def _newest(paths) -> float:
    return max((p.stat().st_mtime for p in paths if p.is_file()), default=0.0)


def _sources():
    yield SOURCE / "package.json"
    yield SOURCE / "package-lock.json"
    yield SOURCE / "tsconfig.json"
    yield from (SOURCE / "src").rglob("*")
    yield from (SOURCE / "style").rglob("*")


def _run(*argv: str) -> None:
    print("science-gateway: " + " ".join(argv), file=sys.stderr)
    subprocess.run(argv, cwd=SOURCE, check=True, stdout=sys.stderr)


def build_labextension() -> None:
    built = OUTPUT / "package.json"
    if built.is_file() and built.stat().st_mtime >= _newest(_sources()):
        return
    if not SOURCE.is_dir():  # an sdist built without the sources: use the prebuilt output
        if built.is_file():
            return
        raise SystemExit("science-gateway: neither labextension/ (the panel's sources) nor its build is here")
    npm, node = shutil.which("npm"), shutil.which("node")
    if not npm or not node:
        raise SystemExit(
            "science-gateway: building the JupyterLab panel needs Node.js and npm (Debian: apt-get install nodejs npm)"
        )
    modules = SOURCE / "node_modules"
    if not modules.is_dir() or modules.stat().st_mtime < (SOURCE / "package-lock.json").stat().st_mtime:
        _run(npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
        modules.touch()
    _run(npm, "run", "build")
    _run(
        node,
        "node_modules/@jupyter/builder/lib/build-labextension.js",
        "--core-package-file",
        "node_modules/@jupyterlab/core-meta/core.package.json",
        ".",
    )
    os.utime(built)


if BUILDING & set(sys.argv[1:]):
    build_labextension()

setup()
