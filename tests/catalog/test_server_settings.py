"""A misspelt server-side setting stops the user's server at start-up, with the key named.

traitlets only warns about an unknown key, and jupyter_server goes on without an extension that
fails to load: without this check a typo in a catalogue setting meant a server without the
gateway's API, found by users as 404s much later.
"""

import os
import subprocess
import sys

import pytest


def start_server(tmp_path, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    env["JUPYTER_RUNTIME_DIR"] = str(tmp_path / "runtime")
    return subprocess.run(
        [os.path.join(sys.prefix, "bin", "jupyter-server"), "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
         "--ServerApp.port=0", f"--ServerApp.root_dir={tmp_path}", *args],
        capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    "setting, named",
    [
        ("--DemoCatalog.catlog_file=x", "DemoCatalog.catlog_file (did you mean catalog_file?)"),
        ("--CatalogBackend.max_page_sise=5", "CatalogBackend.max_page_sise (did you mean max_page_size?)"),
        ("--TokenKeeper.intervall=5", "TokenKeeper.intervall (did you mean interval?)"),
    ],
)
def test_a_typo_stops_the_server_with_the_key_named(tmp_path, setting, named):
    result = start_server(tmp_path, setting)
    assert result.returncode != 0
    assert f"unknown settings {named}" in result.stderr, result.stderr[-2000:]
