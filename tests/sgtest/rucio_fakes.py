"""A stand-in for rucio-clients' ``Client`` at the backend's client boundary, for error paths."""

from __future__ import annotations


class RaisingClient:
    """Stands in for rucio.client.Client: every call raises the exception it was given."""

    def __init__(self, error: Exception):
        self.error = error
        self.headers = {}

    def __getattr__(self, name):
        def call(*args, **kwargs):
            raise self.error

        return call


def rucio_exception(name: str, *args) -> Exception:
    """``rucio.common.exception.<name>(*args)``."""
    from rucio.common import exception

    return getattr(exception, name)(*args)


def raising_catalog(mount_path: str, error: Exception, **traits):
    """A RucioCatalog (userpass, scope ``astro``) whose every Rucio call raises ``error``."""
    from science_gateway.jupyter_ext.catalog.rucio import RucioCatalog

    config = dict(
        rucio_host="http://127.0.0.1:9", auth_type="userpass", account="alice", password="x",
        rse="DISK", mount_path=mount_path, allowed_scopes=["astro"],
    )
    catalog = RucioCatalog(**{**config, **traits})
    catalog._new_client = lambda: RaisingClient(error)
    return catalog
