"""Skip-or-fail for service-backed tests.

A test that needs a real service (Slurm, Rucio, the OIDC provider, Chromium) calls
:func:`require` with a reason when the service is missing. On a developer's machine the test
skips with that reason; under ``CI=true`` a missing service is a failure, never a skip.
"""

import os
import shutil
from pathlib import Path

import pytest

#: where scripts/services/* keep their state, PIDs and the env files tests read
SERVICES_DIR = Path(os.environ.get("SG_SERVICES_DIR", "/var/tmp/science-gateway-services"))
CHROMIUM = os.environ.get("SG_CHROMIUM", "/usr/bin/chromium")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing(service: str, reason: str):
    """Skip (developer machine) or fail (CI) because ``service`` is not available."""
    hint = f"{service} is not available: {reason} (start it with scripts/services/{service} start)"
    if in_ci():
        pytest.fail(f"CI=true and {hint}", pytrace=False)
    pytest.skip(hint)


def service_env(service: str) -> dict[str, str]:
    """The ``KEY=VALUE`` facts a started service wrote to ``$SG_SERVICES_DIR/<service>.env``."""
    path = SERVICES_DIR / f"{service}.env"
    if not path.is_file():
        missing(service, f"{path} does not exist")
    return parse_env(path.read_text())


def parse_env(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines (``#`` comments skipped), as the services' env files hold them."""
    env = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            env[key.strip()] = value.strip()
    return env


def require_chromium() -> str:
    path = shutil.which(CHROMIUM) or (CHROMIUM if os.access(CHROMIUM, os.X_OK) else None)
    if not path:
        missing("chromium", f"no executable at {CHROMIUM} (apt-get install chromium)")
    return path
