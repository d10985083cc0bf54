"""The import direction: every code folder imports the core and nothing sideways; the core imports
nothing of ours. Read from the source files (relative and absolute imports, also inside functions)."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: code folder -> the package it installs as
FOLDERS = {
    "core": "science_gateway.core",
    "hub": "science_gateway.hub",
    "spawners": "science_gateway.spawners",
    "jupyter_ext": "science_gateway.jupyter_ext",
    "gateway": "science_gateway",
}


def folder_of(module: str) -> str | None:
    """The code folder a ``science_gateway...`` module lives in (None: not ours)."""
    if module != "science_gateway" and not module.startswith("science_gateway."):
        return None
    for folder, package in FOLDERS.items():
        if folder != "gateway" and (module == package or module.startswith(package + ".")):
            return folder
    return "gateway"


def module_name(path: Path) -> str:
    folder, *rest = path.relative_to(REPO).with_suffix("").parts
    parts = FOLDERS[folder].split(".") + rest
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path):
    """(line, absolute module) for every import in ``path``."""
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield node.lineno, module
            if node.module is None or module == "science_gateway":  # from . import catalog
                for alias in node.names:
                    yield node.lineno, f"{module}.{alias.name}"


def sources():
    for folder in FOLDERS:
        yield from sorted((REPO / folder).rglob("*.py"))


@pytest.mark.parametrize("path", list(sources()), ids=lambda p: str(p.relative_to(REPO)))
def test_imports_go_only_into_the_core(path):
    here = path.relative_to(REPO).parts[0]
    wrong = []
    for line, module in imported_modules(path):
        there = folder_of(module)
        if there is None or there == here or there == "core":
            continue
        if module == "science_gateway" and here != "core":
            continue  # the package root itself (``from .. import x`` resolved below)
        wrong.append(f"{path.relative_to(REPO)}:{line} imports {module} ({here}/ -> {there}/)")
    if here == "core":
        wrong += [
            f"{path.relative_to(REPO)}:{line} imports {module}"
            for line, module in imported_modules(path)
            if folder_of(module) not in (None, "core")
        ]
    assert not wrong, "imports across folders (only into core/ is allowed):\n" + "\n".join(sorted(set(wrong)))


def test_the_checker_sees_a_crossing(tmp_path, monkeypatch):
    """The check can fail: a relative import from hub/ into spawners/ is reported."""
    monkeypatch.setattr(__import__(__name__), "REPO", tmp_path)
    (tmp_path / "hub").mkdir()
    bad = tmp_path / "hub" / "x.py"
    bad.write_text("def f():\n    from ..spawners.slurm import SlurmSpawner\n")
    assert ("science_gateway.spawners.slurm" in [m for _, m in imported_modules(bad)])
    assert folder_of("science_gateway.spawners.slurm") == "spawners"
    assert folder_of("science_gateway.dask") == "gateway" and folder_of("science_gateway.core.text") == "core"
