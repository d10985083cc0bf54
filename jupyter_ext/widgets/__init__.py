"""ipywidgets for notebooks: views over the Python API (``science_gateway.widgets``)."""

from .views import DatasetBrowser, StagingMonitor

__all__ = ["DatasetBrowser", "StagingMonitor"]
