"""Rucio's generic schema, unchanged."""

from rucio.common.schema.generic import *  # noqa: F401,F403
