"""ipywidgets for notebooks: views over the Python API (``science_gateway.widgets``)."""

from .views import ClusterLauncher, DatasetBrowser, StagingMonitor

__all__ = ["ClusterLauncher", "DatasetBrowser", "StagingMonitor"]
