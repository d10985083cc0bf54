"""Secrets of a test run, and where they must never appear: its logs.

:func:`process_secrets` reads the secret-looking environment variables (tokens, secrets,
passwords, keys) of a process and all its descendants from ``/proc`` (the hub, its proxy, the
users' servers it spawned), :func:`hub_secrets` adds what a running hub keeps in files (its
cookie secret, the servers' cookie secrets). :func:`leaks` says which secret is in which log, by
name only, so a failing assertion does not print the secret either.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: environment variable names whose values are secrets
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CRYPT_KEY|COOKIE", re.IGNORECASE)
#: shorter values are not searched for (they would match by chance)
MIN_LENGTH = 8


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    children, found, todo = _children(), [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def process_secrets(pid: int) -> dict[str, str]:
    """``{"<command> pid N: NAME": value}`` for each secret-looking variable of the process tree."""
    found = {}
    for member in process_tree(pid):
        try:
            command = Path(f"/proc/{member}/comm").read_text().strip()
        except OSError:
            continue
        for name, value in environ(member).items():
            if SECRET_NAME.search(name) and len(value) >= MIN_LENGTH:
                found[f"{command} pid {member}: {name}"] = value
    return found


def hub_secrets(hub) -> dict[str, str]:
    """A running :class:`~sgtest.hub.RunningHub`'s secrets: its processes' and its cookie secrets."""
    found = process_secrets(hub.proc.pid)
    for path in [hub.state_dir / "jupyterhub_cookie_secret", *hub.state_dir.glob("home/*/.local/share/jupyter/runtime/*cookie_secret")]:
        if path.is_file():  # both are text: hex (the hub's), base64 (jupyter_server's)
            found[str(path.relative_to(hub.state_dir))] = path.read_text(errors="replace").strip()
    return {name: value for name, value in found.items() if len(value) >= MIN_LENGTH}


def leaks(secrets: dict[str, str], logs: dict[str, str]) -> list[str]:
    """``"NAME in LOG"`` for each secret found in a log (never the values); secrets shorter than
    :data:`MIN_LENGTH` are not searched for (give the test users long passwords)."""
    return [f"{name} in {log_name}" for log_name, text in logs.items() for name, value in secrets.items()
            if len(value) >= MIN_LENGTH and value in text]
