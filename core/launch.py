"""Launch links: one URL that opens a notebook on a dataset (``/hub/launch?notebook=...&dataset=...``).

An admin or a paper publishes a link such as::

    /hub/launch?notebook=analysis/spectra.ipynb&dataset=demo:run2024.raw.0001&partition=cpu&cores=2

The hub (``hub/launch.py``) logs the user in, checks the link, spawns with the link's choices (the
group policy applies; missing choices fall back to the spawn form) and sends the browser to the
user's server (``jupyter_ext/launch.py``), which copies the notebook from the gateway's notebook
library into the user's home, stages the dataset and opens the notebook in JupyterLab when the data
is ready. Both ends parse the link with :func:`parse_launch_query`, so a link the hub accepted means
the same to the server.

Pure functions; a refused link raises :class:`LaunchError` naming the part at fault and quoting at
most a short prefix of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .catalog import InvalidDID, parse_did
from .policy import REQUEST_KEYS
from .text import quote_prefix

#: the link's own keys; every other key is a spawn choice (one of the policy's REQUEST_KEYS)
LINK_KEYS = ("notebook", "dataset")
#: one path component of a library notebook: no leading dot, no separators, no spaces
_COMPONENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
MAX_NOTEBOOK_PATH = 255
MAX_DEPTH = 8
#: longest spawn choice value a link may carry (the policy then checks the value itself)
MAX_OPTION = 64


class LaunchError(ValueError):
    """A launch link the gateway refuses; the message says which part and why."""


def check_notebook_path(path) -> str:
    """``path`` if it names a notebook inside the library: relative, ``/``-separated components of
    letters, digits and ``._-`` (none starting with a dot, so no ``..`` and no hidden folders),
    ending in ``.ipynb``."""
    if not isinstance(path, str) or not path:
        raise LaunchError("the link names no notebook: add notebook=PATH.ipynb (a notebook of the gateway's library)")
    if len(path) > MAX_NOTEBOOK_PATH:
        raise LaunchError(f"notebook {quote_prefix(path)} is longer than {MAX_NOTEBOOK_PATH} characters")
    parts = path.split("/")
    if len(parts) > MAX_DEPTH or not all(_COMPONENT_RE.fullmatch(p) for p in parts) or not path.endswith(".ipynb"):
        raise LaunchError(
            f"notebook {quote_prefix(path)} must be a relative path in the gateway's notebook library: "
            "folders and a name of letters, digits, '.', '_' or '-' (none starting with '.'), ending in .ipynb"
        )
    return path


@dataclass(frozen=True)
class LaunchLink:
    """A checked launch link: the notebook, the dataset (or None) and the spawn choices it makes."""

    notebook: str
    dataset: str | None = None
    options: dict = field(default_factory=dict)

    def link_query(self) -> dict[str, str]:
        """The link's own part (notebook, dataset), for the user's server."""
        query = {"notebook": self.notebook}
        if self.dataset:
            query["dataset"] = self.dataset
        return query


def parse_launch_query(query: dict) -> LaunchLink:
    """``{key: [value, ...]}`` (tornado's query arguments, decoded) -> :class:`LaunchLink`.

    Each key may appear once. ``notebook`` is required, ``dataset`` optional (``scope:name``);
    every other key must be a spawn choice (:data:`~.policy.REQUEST_KEYS`), whose values the
    spawner's policy checks.
    """
    values = {}
    for key, given in query.items():
        given = given if isinstance(given, (list, tuple)) else [given]
        if key not in LINK_KEYS and key not in REQUEST_KEYS:
            raise LaunchError(
                f"unknown key {quote_prefix(key)} in the launch link; it takes {', '.join(LINK_KEYS)} "
                f"and the spawn choices {', '.join(REQUEST_KEYS)}"
            )
        if len(given) != 1:
            raise LaunchError(f"{key} appears {len(given)} times in the launch link; give it once")
        value = given[0]
        if not isinstance(value, str):
            raise LaunchError(f"{key} in the launch link is not text")
        values[key] = value
    notebook = check_notebook_path(values.pop("notebook", None))
    dataset = values.pop("dataset", None) or None
    if dataset is not None:
        try:
            parse_did(dataset)
        except InvalidDID as e:
            raise LaunchError(f"dataset in the launch link: {e}") from None
    for key, value in values.items():
        if len(value) > MAX_OPTION:
            raise LaunchError(f"{key} {quote_prefix(value)} in the launch link is longer than {MAX_OPTION} characters")
    options = {k: v for k, v in values.items() if v != ""}
    return LaunchLink(notebook, dataset, options)
