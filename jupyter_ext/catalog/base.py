"""The one base class for catalogue backends.

Override ladder (what a backend overrides, in increasing depth):

1. ``@default`` values for the traits below (display name, page size limits).
2. :meth:`CatalogBackend.search` and :meth:`CatalogBackend.list_files`, the read side.

Callers (the REST handlers, the Python API) use :meth:`query` to validate user input before any
backend sees it; backends must not override :meth:`query`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from traitlets import Integer, Unicode
from traitlets.config import LoggingConfigurable

from .models import DatasetFile, SearchPage

_PATTERN_RE = re.compile(r"^[A-Za-z0-9*._/-]{1,250}$")
_KEY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_VALUE_RE = re.compile(r"^[A-Za-z0-9*._:/+-]{1,250}$")


class InvalidQuery(ValueError):
    """Search input a person must correct; the message says how."""


@dataclass(frozen=True)
class SearchQuery:
    """A validated search: a name pattern (``*`` wildcards) and exact-match metadata filters."""

    pattern: str = "*"
    filters: dict[str, str] = field(default_factory=dict)
    limit: int = 50
    page: str | None = None


def parse_filters(text: str) -> dict[str, str]:
    """``"project=run2024, datatype=RAW"`` -> ``{"project": "run2024", "datatype": "RAW"}``."""
    filters = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise InvalidQuery(f"filter {part!r} must look like key=value")
        filters[key.strip()] = value.strip()
    return filters


class CatalogBackend(LoggingConfigurable):
    """Search datasets and list their files. Subclasses implement the coroutines below."""

    display_name = Unicode("Catalogue", help="Name shown to users for this catalogue.").tag(config=True)

    max_page_size = Integer(
        500, help="Largest page of search results a client may ask for; larger requests are refused."
    ).tag(config=True)

    def query(self, pattern="*", filters=None, limit=50, page=None) -> SearchQuery:
        """Validate raw user input into a :class:`SearchQuery`, raising :class:`InvalidQuery`."""
        pattern = pattern or "*"
        if not _PATTERN_RE.match(pattern):
            raise InvalidQuery(
                f"name pattern {pattern!r} may hold letters, digits, '.', '_', '-', '/' and '*' only"
            )
        if isinstance(filters, str):
            filters = parse_filters(filters)
        filters = dict(filters or {})
        for key, value in filters.items():
            if not isinstance(key, str) or not _KEY_RE.match(key):
                raise InvalidQuery(f"metadata key {key!r} must start with a letter and hold letters, digits, '_', '.' or '-'")
            if not isinstance(value, str) or not _VALUE_RE.match(value):
                raise InvalidQuery(f"value {value!r} for {key!r} holds characters a filter cannot use")
        try:
            limit = int(limit)
        except (TypeError, ValueError):
            raise InvalidQuery(f"limit {limit!r} must be a whole number") from None
        if not 1 <= limit <= self.max_page_size:
            raise InvalidQuery(f"limit must be between 1 and {self.max_page_size}, not {limit}")
        return SearchQuery(pattern=pattern, filters=filters, limit=limit, page=page or None)

    async def search(self, query: SearchQuery) -> SearchPage:
        """One page of datasets whose name matches ``query.pattern`` and metadata ``query.filters``."""
        raise NotImplementedError

    async def list_files(self, did: str) -> list[DatasetFile] | None:
        """The files of dataset ``did``, or None when there is no such dataset."""
        raise NotImplementedError
