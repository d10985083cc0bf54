"""The side panel's state logic (labextension/src/state.ts) under Jest, from the README's test command."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

PANEL = Path(__file__).resolve().parents[2] / "labextension"


def test_the_panels_state_logic_passes_its_jest_tests():
    npm = shutil.which("npm")
    modules = PANEL / "node_modules" / ".bin" / "jest"
    if not npm or not modules.exists():
        reason = "the panel's Jest tests need npm and labextension/node_modules (building the wheel installs them)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    out = subprocess.run([npm, "test", "--", "--ci", "--silent"], cwd=PANEL, capture_output=True, text=True, timeout=300)
    report = out.stdout + out.stderr
    assert out.returncode == 0, report[-4000:]
    assert "Tests:" in report and " failed" not in report.split("Tests:")[1].splitlines()[0], report[-2000:]
