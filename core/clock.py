"""The one clock: every module that needs "now" calls :func:`utcnow` (tests replace it here)."""

from __future__ import annotations

import datetime
import time


def utcnow() -> float:
    """Seconds since the epoch."""
    return time.time()


def utcnow_datetime() -> datetime.datetime:
    """Now as an aware UTC datetime (the same clock as :func:`utcnow`)."""
    return datetime.datetime.fromtimestamp(utcnow(), datetime.timezone.utc)
