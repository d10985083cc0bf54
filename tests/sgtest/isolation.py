"""Tests leave the process as they found it: os.environ, sys.path, tempfile's folder, the root logger.

conftest.py's autouse fixtures snapshot these before each test (and each module) and fail the test
whose code or fixtures left them changed; monkeypatch, or a fixture that restores, is the way.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile

import pytest

#: environment variables pytest itself sets and clears around each test
PYTEST_OWN_ENVIRON = frozenset({"PYTEST_CURRENT_TEST"})
#: set on purpose by libraries the tests run in-process: distributed's Nanny writes its
#: ``distributed.nanny.pre-spawn-environ`` (and PYTHONHASHSEED) into os.environ before it forks a
#: worker, and ``distributed.proctitle`` marks the parent; the same values every time
LIBRARY_ENVIRON = frozenset({
    "MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PYTHONHASHSEED",
    "__DASK_PARENT_PID",
})
IGNORED_ENVIRON = PYTEST_OWN_ENVIRON | LIBRARY_ENVIRON


def process_globals() -> dict:
    """What a test must leave as it found it: os.environ, sys.path, tempfile's folder, the root logger."""
    return {
        "environ": {k: v for k, v in os.environ.items() if k not in IGNORED_ENVIRON},
        "sys.path": list(sys.path),
        "tempfile.gettempdir()": tempfile.gettempdir(),
        "the root logger": root_logger(),
    }


def root_logger() -> tuple:
    """The root logger's level and handlers, without the capture handlers pytest adds per phase."""
    root = logging.getLogger()
    return root.level, [h for h in root.handlers if not type(h).__module__.startswith("_pytest.")]


def changed_globals(before: dict, after: dict) -> list[str]:
    """Names of what changed (never the values: environments hold tokens)."""
    changes = []
    old, new = before["environ"], after["environ"]
    for label, names in (
        ("set", sorted(new.keys() - old.keys())),
        ("removed", sorted(old.keys() - new.keys())),
        ("changed", sorted(k for k in old.keys() & new.keys() if old[k] != new[k])),
    ):
        if names:
            changes.append(f"os.environ {label}: {', '.join(names)}")
    for key in ("sys.path", "tempfile.gettempdir()", "the root logger"):
        if before[key] != after[key]:
            changes.append(f"{key} changed")
    return changes


def restore_globals(before: dict) -> None:
    """Put back what :func:`process_globals` saw, so one leak does not spread to later tests."""
    own = {k: os.environ[k] for k in IGNORED_ENVIRON if k in os.environ}
    os.environ.clear()
    os.environ.update({**before["environ"], **own})
    sys.path[:] = before["sys.path"]
    tempfile.tempdir = before["tempfile.gettempdir()"]
    root = logging.getLogger()
    level, handlers = before["the root logger"]
    root.setLevel(level)
    for handler in root.handlers:
        if not type(handler).__module__.startswith("_pytest.") and handler not in handlers:
            root.removeHandler(handler)


def check_globals_restored(before: dict, where: str) -> None:
    """Fail (after restoring them) when process globals differ from ``before``."""
    changes = changed_globals(before, process_globals())
    if changes:
        restore_globals(before)
        pytest.fail(
            f"{where} left process globals changed ({'; '.join(changes)}): use monkeypatch "
            "(setenv, syspath_prepend) or a fixture / context manager that restores them",
            pytrace=False,
        )
