"""Log lines of the libraries under us, without their secrets (core.logs)."""

import logging

import pytest
from jupyterhub.spawner import SpawnException
from tornado import web

from science_gateway.core.logs import FILTERS, XSRF_LOGGER, XSRF_MESSAGE, scrub_library_logs


@pytest.fixture
def scrubbed():
    """scrub_library_logs() installed (twice: once only) on loggers without our filters (a server
    extension loaded in this process may have installed them), the loggers' filters restored after."""
    before = {name: list(logging.getLogger(name).filters) for name in FILTERS}
    for name, kind in FILTERS.items():
        logging.getLogger(name).filters[:] = [f for f in before[name] if not isinstance(f, kind)]
    scrub_library_logs()
    scrub_library_logs()
    try:
        for name, kind in FILTERS.items():
            assert sum(isinstance(f, kind) for f in logging.getLogger(name).filters) == 1
        yield
    finally:
        for name, filters in before.items():
            logging.getLogger(name).filters[:] = filters


def test_jupyterhubs_xsrf_cookie_line_keeps_no_session_id(scrubbed, caplog):
    """Found by the fuzz tests' log check: JupyterHub logs the id, whose first half is the
    jupyterhub-session-id cookie."""
    logger = logging.getLogger(XSRF_LOGGER)
    session_id = "3a0f1c15aa624ce6a515772c3932927e"
    with caplog.at_level(logging.INFO, logger=XSRF_LOGGER):
        logger.info(XSRF_MESSAGE, f"{session_id}:6057c98265fd42c29ec8270e726d9798".encode(), {"path": "/hub/"})
        logger.info("another line %s", session_id)
    assert caplog.messages[0] == "Setting new xsrf cookie for '[secret]' {'path': '/hub/'}"
    assert caplog.messages[1] == f"another line {session_id}"  # other lines are left alone


def raised(error):
    try:
        raise error
    except Exception:
        import sys

        return sys.exc_info()


def test_a_refused_spawn_form_is_one_line_without_traceback(scrubbed, caplog):
    """Found by the spawn-form fuzz: JupyterHub logged every form post the policy refused with a traceback."""
    logger = logging.getLogger("JupyterHub")
    refusal = SpawnException("cores must be a whole number, got '1; id'", reason="resource_policy", status_code=400)
    with caplog.at_level(logging.INFO, logger="JupyterHub"):
        logger.error("Failed to spawn single-user server with form", exc_info=raised(refusal))
        logger.error("Failed %s", "hard", exc_info=raised(web.HTTPError(500, "the scheduler is down")))
        logger.error("Broken", exc_info=raised(KeyError("x")))
    first, server_error, bug = caplog.records
    assert first.exc_info is None and "cores must be a whole number" in first.getMessage()
    assert first.getMessage().startswith("Failed to spawn single-user server with form: ")
    # server errors and bugs keep their tracebacks
    assert server_error.exc_info is not None and bug.exc_info is not None
