"""The embedded default's catalogue: a few small example datasets bundled with the package."""

from __future__ import annotations

import fnmatch
import json
from importlib.resources import files

from traitlets import Unicode, default

from .base import CatalogBackend, InvalidQuery, SearchQuery
from .models import Dataset, DatasetFile, SearchPage, parse_did


class DemoCatalog(CatalogBackend):
    """Datasets listed in a JSON file (by default, the bundled demo catalogue)."""

    catalog_file = Unicode(
        help="""JSON file listing the datasets ({"datasets": [{"scope", "name", "metadata",
        "availability", "files": [{"name", "bytes"}]}]}). Defaults to the bundled demo catalogue.""",
    ).tag(config=True)

    @default("catalog_file")
    def _catalog_file_default(self):
        return str(files("science_gateway.jupyter_ext") / "demo_data" / "catalog.json")

    @default("display_name")
    def _display_name_default(self):
        return "Demo catalogue"

    _entries: dict | None = None

    def _load(self) -> dict:
        if self._entries is None:
            with open(self.catalog_file) as f:
                raw = json.load(f)
            self._entries = {f"{d['scope']}:{d['name']}": d for d in raw["datasets"]}
        return self._entries

    @staticmethod
    def _dataset(entry: dict) -> Dataset:
        return Dataset(
            scope=entry["scope"],
            name=entry["name"],
            bytes=sum(f["bytes"] for f in entry["files"]),
            files=len(entry["files"]),
            metadata=dict(entry["metadata"]),
            availability=entry.get("availability", "disk"),
        )

    async def search(self, query: SearchQuery) -> SearchPage:
        matches = [
            self._dataset(e)
            for e in self._load().values()
            if fnmatch.fnmatchcase(e["name"], query.pattern)
            and all(str(e["metadata"].get(k)) == v for k, v in query.filters.items())
        ]
        matches.sort(key=lambda d: d.did)
        if not (query.page or "0").isdigit():
            raise InvalidQuery(f"page token {query.page!r} was not issued by this catalogue")
        start = int(query.page or 0)
        end = start + query.limit
        return SearchPage(matches[start:end], next=str(end) if end < len(matches) else None)

    async def list_files(self, did: str) -> list[DatasetFile] | None:
        scope, _ = parse_did(did)
        entry = self._load().get(did)
        if entry is None:
            return None
        return [DatasetFile(scope=scope, name=f["name"], bytes=f["bytes"]) for f in entry["files"]]
