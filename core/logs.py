"""Log lines without secrets or needless tracebacks, whatever the libraries under us write.

Both found by the hostile-input fuzz tests' log check (tests/gateway/test_hostile_fuzz.py):

- JupyterHub (the hub, and each single-user server through ``jupyterhub.singleuser``) logs every
  new XSRF cookie with its id, ``Setting new xsrf cookie for b'<session id>:<hash>'``, at INFO:
  the id's first half is the value of the ``jupyterhub-session-id`` cookie of the person who
  logged in. :class:`XsrfIdFilter` keeps the line and writes ``[secret]`` for the id.
- JupyterHub logs some client errors with a traceback, e.g. every spawn-form post the policy
  refuses ("Failed to spawn single-user server with form"). :class:`ClientErrorTracebackFilter`
  keeps the line, with the error's message, and drops the traceback of an HTTP error below 500.

:func:`scrub_library_logs` installs both where JupyterHub logs them. The hub's authenticators
call it when the hub starts, the server extension when the server loads it.
"""

from __future__ import annotations

import logging

#: the logger JupyterHub's XSRF helpers write to (tornado's application log)
XSRF_LOGGER = "tornado.application"
#: the message (its format string) that holds the cookie's id as its first argument
XSRF_MESSAGE = "Setting new xsrf cookie for %r %r"


class XsrfIdFilter(logging.Filter):
    """Replaces the XSRF cookie id in JupyterHub's "Setting new xsrf cookie" lines with ``[secret]``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == XSRF_MESSAGE and isinstance(record.args, tuple) and record.args:
            record.args = ("[secret]", *record.args[1:])
        return True


class ClientErrorTracebackFilter(logging.Filter):
    """A record whose exception is an HTTP error below 500 (``status_code`` 4xx) loses its
    traceback; its line gets the error's message instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        status = getattr(error, "status_code", None)
        if isinstance(status, int) and 400 <= status < 500:
            record.msg, record.args = f"{record.getMessage()}: {error}", None
            record.exc_info = record.exc_text = None
        return True


#: logger name -> the filter it gets ("JupyterHub" is the hub application's log)
FILTERS = {XSRF_LOGGER: XsrfIdFilter, "JupyterHub": ClientErrorTracebackFilter}


def scrub_library_logs() -> None:
    """Install each filter of :data:`FILTERS` (once) on its logger."""
    for name, kind in FILTERS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())
