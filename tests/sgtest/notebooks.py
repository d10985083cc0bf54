"""Execute example notebooks with nbclient as a user of a running gateway would."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "notebooks" / "examples"


def api_token(session, username: str, note: str = "example notebooks", scopes: list[str] | None = None) -> str:
    """A JupyterHub API token for ``username`` (all of their rights, or ``scopes``), made through
    the user's own logged-in session."""
    body = {"note": note, "expires_in": 3600, **({"scopes": scopes} if scopes else {})}
    r = session.http.post(
        f"{session.hub.url}/hub/api/users/{username}/tokens",
        json=body,
        headers=session.xsrf_headers(),
        timeout=30,
    )
    r.raise_for_status()
    return r.json()["token"]


def execute(path: Path, env: dict, cwd: Path, timeout: int = 600):
    """Run every cell of ``path`` in a fresh python3 kernel with ``env`` added; return the notebook."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    # the kernel gets this process's environment plus ``env``; os.environ itself stays as it was
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute(
        env={**os.environ, **env}
    )
    return nb


def outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.extend(str(v) for v in out.get("data", {}).values())
    return "\n".join(parts)
