"""Widgets for notebooks, one line in a cell each::

    from science_gateway.widgets import DatasetBrowser
    DatasetBrowser()

They are views over :mod:`science_gateway.catalog` (and :mod:`science_gateway.dask`), so what a
widget does a script can do too.
"""

from .views import ClusterLauncher, DatasetBrowser, PublishPanel, StagingMonitor

__all__ = ["ClusterLauncher", "DatasetBrowser", "PublishPanel", "StagingMonitor"]
