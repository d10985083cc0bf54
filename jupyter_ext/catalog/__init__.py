"""Catalogue backends: search datasets and make them readable from the notebook."""

from .base import CatalogBackend
from ...core.catalog import Dataset, DatasetFile, InvalidDID, SearchPage, parse_did

__all__ = ["CatalogBackend", "Dataset", "DatasetFile", "InvalidDID", "SearchPage", "parse_did"]
