"""Widgets for notebooks, one line in a cell each::

    from science_gateway.widgets import DatasetBrowser
    DatasetBrowser()

They are views over :mod:`science_gateway.catalog` (and :mod:`science_gateway.dask`, :mod:`science_gateway.jobs`), so what a
widget does a script can do too.
"""

from .runs import NotebookRunner
from .views import ClusterLauncher, DatasetBrowser, PublishPanel, StagingMonitor

__all__ = ["ClusterLauncher", "DatasetBrowser", "NotebookRunner", "PublishPanel", "StagingMonitor"]
