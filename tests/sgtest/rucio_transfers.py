"""The real Rucio stack of scripts/services/rucio, for tests: clients, fresh datasets, transfers.

:func:`transfer_round` runs Rucio's own judge-evaluator, conveyor submitter, poller and finisher
once each, in the Rucio server's own venv, with the ``mock`` transfertool made to copy
``file://`` PFNs (``scripts/rucio/transfer_round.py``): rules go REPLICATING -> OK with real files
on the disk RSE, or STUCK when a source file is missing.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .services import missing, service_env


def rucio_env(token_dir: Path | None = None) -> dict[str, str]:
    """The facts of the running Rucio service (skips, or fails under CI, when it is not there).

    For a token cache of this run's own, wrap the fixture's ``yield`` in :func:`private_token_dir`.
    """
    if token_dir is not None:
        raise TypeError(
            "rucio_env(token_dir) changed TMPDIR for the rest of the session; write "
            "`with rt.private_token_dir(tmp_path_factory.mktemp('rucio-tokens')): yield rt.rucio_env()` instead"
        )
    env = service_env("rucio")
    import urllib.request

    try:
        with urllib.request.urlopen(env["RUCIO_URL"] + "/ping", timeout=10) as r:
            r.read()
    except OSError as e:
        missing("rucio", f"{env['RUCIO_URL']}/ping does not answer: {e}")
    return env


@contextmanager
def private_token_dir(path: Path) -> Iterator[Path]:
    """rucio-clients made inside this block cache their tokens under ``path``; restored on exit.

    rucio-clients picks its token folder once, when ``rucio.client.baseclient`` is imported
    (``BaseClient.TOKEN_PATH_PREFIX``, from ``$TMPDIR``): setting TMPDIR afterwards changes nothing,
    so the prefix itself is patched, for every Client built in the block (the tests' and the
    backend's).
    """
    from rucio.client.baseclient import BaseClient

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(BaseClient, "TOKEN_PATH_PREFIX", f"{path}/.rucio_")
        yield Path(path)


@pytest.fixture(scope="module")
def rucio(tmp_path_factory):
    """The running Rucio's facts (:func:`rucio_env`), with a rucio-clients token cache of the
    module's own; a module uses it by importing it (``from sgtest.rucio_transfers import rucio``)."""
    with private_token_dir(tmp_path_factory.mktemp("rucio-tokens")):
        yield rucio_env()


def client(env: dict, account: str = "root", password: str | None = None):
    from rucio.client import Client

    password = password or (env["RUCIO_ROOT_PASSWORD"] if account == "root" else None)
    return Client(
        rucio_host=env["RUCIO_URL"], auth_host=env["RUCIO_AUTH_URL"], account=account,
        auth_type="userpass", creds={"username": account, "password": password},
    )


def backend_config(env: dict, user: str = "alice", **traits) -> dict:
    """``RucioCatalog`` traits for ``user`` (the test account, or the other one) on the running
    Rucio: userpass, the disk RSE and its mount, every status call asking Rucio; ``traits`` override."""
    other = user != env["RUCIO_USER"]
    return {
        "rucio_host": env["RUCIO_URL"],
        "auth_type": "userpass",
        "account": env["RUCIO_OTHER_ACCOUNT"] if other else env["RUCIO_ACCOUNT"],
        "password": env["RUCIO_OTHER_PASSWORD"] if other else env["RUCIO_PASSWORD"],
        "rse": env["RUCIO_DISK_RSE"],
        "mount_path": env["RUCIO_MOUNT_PATH"],
        "allowed_scopes": env["RUCIO_SCOPES"].split(","),
        "status_refresh_seconds": 0,
        "idle_refresh_seconds": 0,
        "rule_lifetime": 3600,
        **traits,
    }


def server_settings(env: dict, scopes: list[str] | None = None, **traits) -> tuple[list[str], dict[str, str]]:
    """``(Spawner.args, Spawner.environment)`` that give a hub-spawned user's server the Rucio
    backend on the running Rucio, as docs/catalog.md describes: the settings as arguments, the
    account and its password in the environment (read by ``RucioCatalog``); ``traits`` add or
    override ``--RucioCatalog.<name>=<value>`` arguments."""
    settings = {
        "rucio_host": env["RUCIO_URL"], "auth_host": env["RUCIO_AUTH_URL"], "auth_type": "userpass",
        "rse": env["RUCIO_DISK_RSE"], "mount_path": env["RUCIO_MOUNT_PATH"], "rule_lifetime": 3600,
        "status_refresh_seconds": 1, **traits,
    }
    args = [
        "--GatewayExtension.catalog_class=science_gateway.jupyter_ext.catalog.rucio.RucioCatalog",
        *(f"--RucioCatalog.{name}={value}" for name, value in settings.items()),
        *(f"--RucioCatalog.allowed_scopes={scope}" for scope in (scopes or env["RUCIO_SCOPES"].split(","))),
    ]
    return args, {"RUCIO_ACCOUNT": env["RUCIO_ACCOUNT"], "RUCIO_PASSWORD": env["RUCIO_PASSWORD"]}


def _file_bytes(scope: str, name: str, header: str = "") -> bytes:
    first = f"{header}\n" if header else f"# {scope}:{name}\n"
    return (first + "".join(f"{i},{i * i}\n" for i in range(50))).encode()


def make_dataset(admin, env: dict, n_files: int = 4, missing_files: tuple[int, ...] = (), scope: str = "astro",
                 meta: dict | None = None, prefix: str = "sgtest", header: str = "") -> str:
    """A fresh dataset whose files are on the tape RSE only (protected by an archive rule).

    Files whose index is in ``missing_files`` are registered but not written, so copying them fails.
    Each file holds 50 rows ``i,i*i``; its first line is ``# scope:name``, or ``header`` (a CSV
    header such as ``time,flux``) when given.
    """
    name = f"{prefix}.{uuid.uuid4().hex[:10]}"
    tape = env["RUCIO_TAPE_RSE"]
    from science_gateway.jupyter_ext.catalog.rucio import deterministic_path

    prefix = Path(env["RUCIO_TAPE_PATH"])
    files = []
    for i in range(n_files):
        fname = f"{name}.part{i:03d}.csv"
        data = _file_bytes(scope, fname, header)
        if i not in missing_files:
            path = prefix / deterministic_path(scope, fname)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        files.append({"scope": scope, "name": fname, "bytes": len(data),
                      "adler32": f"{zlib.adler32(data) & 0xffffffff:08x}", "md5": hashlib.md5(data).hexdigest()})
    admin.add_replicas(tape, files)
    admin.add_dataset(scope, name, meta=meta or {"project": "sgtest", "datatype": "TEST"})
    admin.attach_dids(scope, name, [{"scope": scope, "name": f["name"]} for f in files])
    admin.close(scope, name)
    admin.add_replication_rule([{"scope": scope, "name": name}], 1, tape, comment="archive")
    return f"{scope}:{name}"


def staged_in_progress(admin, env: dict, catalog, n_files: int = 4, attempts: int = 3):
    """``(did, request)``: a fresh dataset staged through ``catalog`` (the Python API, a
    ``science_gateway.catalog.Catalog``), its status still in progress when this returns.

    Other tests run transfer rounds on the same shared Rucio, and a round copies every pending
    rule's files: when one finished this request between the stage and the status call, it is
    cancelled and another dataset staged.
    """
    for _ in range(attempts):
        did = make_dataset(admin, env, n_files=n_files)
        request = catalog.stage(did)
        current = catalog.status(request)
        if current.state == "in_progress":
            return did, current
        catalog.cancel(request)
    raise RuntimeError(f"{attempts} fresh stage-in requests were all finished at once by other transfer rounds")


async def transfer_round(env: dict, cycles: int = 1, bulk: int = 1000) -> None:
    """One (or ``cycles``) round(s) of Rucio's transfer daemons; ``bulk`` caps transfers per cycle."""
    argv = [env["RUCIO_SERVER_PYTHON"], env["RUCIO_TRANSFER_ROUND"], "--cycles", str(cycles), "--bulk", str(bulk)]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        # the server's own venv, not this process's environment (which may point at rucio-clients)
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "RUCIO_CONFIG": env["RUCIO_SERVER_CONFIG"],
            "TMPDIR": tempfile.gettempdir(),
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 300)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode:
        raise RuntimeError(f"{argv} exited {proc.returncode}:\n{out.decode()}\n{err.decode()}")
