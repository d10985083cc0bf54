"""The server extension gives each user the example notebooks, whatever spawned the server."""

import pytest


@pytest.fixture
def examples_src(tmp_path):
    src = tmp_path / "shipped-examples"
    src.mkdir()
    (src / "01-walkthrough.ipynb").write_text('{"cells": []}')
    return src


@pytest.fixture
def gateway_config(examples_src):
    return {
        "GatewayExtension": {"examples_dir": str(examples_src)},
    }


@pytest.fixture
def extension(jp_serverapp):
    return jp_serverapp.extension_manager.extension_apps["science_gateway.jupyter_ext"].pop()


async def test_examples_are_copied_into_a_new_home_when_the_server_starts(jp_serverapp, jp_root_dir):
    assert (jp_root_dir / "examples" / "01-walkthrough.ipynb").read_text() == '{"cells": []}'


async def test_a_users_own_examples_are_never_overwritten(extension, tmp_path):
    home = tmp_path / "home"
    (home / "examples").mkdir(parents=True)
    (home / "examples" / "01-walkthrough.ipynb").write_text("my own edits")
    extension.copy_examples(str(home))
    assert (home / "examples" / "01-walkthrough.ipynb").read_text() == "my own edits"


async def test_a_home_that_cannot_be_written_does_not_stop_the_server(extension, tmp_path, caplog):
    home = tmp_path / "not-a-folder"
    home.write_text("")  # copying under a file fails like a read-only home
    extension.copy_examples(str(home))
    assert "could not copy the example notebooks" in caplog.text


async def test_no_examples_dir_copies_nothing(extension, tmp_path):
    extension.examples_dir = ""
    extension.copy_examples(str(tmp_path))
    assert not (tmp_path / "examples").exists()
