"""The embedded default's catalogue: a few small example datasets bundled with the package.

Staging copies the bundled files into a per-user directory under the gateway's state directory;
the requests are kept in a JSON file there, so they outlive the kernel and the server. Datasets
marked as on tape show a recall: their files become ready one by one over
:attr:`DemoCatalog.tape_recall_seconds`.
"""

from __future__ import annotations

import datetime
import fnmatch
import getpass
import json
import os
import shutil
import time
import uuid
from dataclasses import replace
from importlib.resources import files
from pathlib import Path

from traitlets import Float, Integer, Unicode, default

from ...core.text import format_bytes
from .base import CatalogBackend
from ...core.catalog import (
    InvalidQuery,
    QuotaExceeded,
    SearchQuery,
    FAILED,
    IN_PROGRESS,
    READY,
    Dataset,
    DatasetFile,
    FailedFile,
    SearchPage,
    StageRequest,
    check_request_id,
    parse_did,
    progress_message,
)


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).isoformat()


class DemoCatalog(CatalogBackend):
    """Datasets listed in a JSON file (by default, the bundled demo catalogue)."""

    catalog_file = Unicode(
        help="""JSON file listing the datasets ({"datasets": [{"scope", "name", "metadata",
        "availability", "files": [{"name", "bytes"}]}]}). Defaults to the bundled demo catalogue.""",
    ).tag(config=True)

    files_dir = Unicode(
        help="""Directory holding the datasets' files as <scope>/<name>/<file>. Defaults to the
        files bundled next to the bundled catalogue.""",
    ).tag(config=True)

    user = Unicode(
        help="The user whose requests this server keeps. Defaults to $JUPYTERHUB_USER, else the unix user.",
    ).tag(config=True)

    state_dir = Unicode(
        help="""Where staged files and the request list live (one directory per user). Defaults to
        $SCIENCE_GATEWAY_STATE_DIR/catalog/<user>, else ~/.science-gateway/catalog/<user>.""",
    ).tag(config=True)

    quota_bytes = Integer(
        100 * 10**6, help="How many bytes of staged data each user may keep; a stage-in that would exceed it is refused."
    ).tag(config=True)

    tape_recall_seconds = Float(
        6.0, help="How long a recall of a dataset marked as on tape takes, its files becoming ready one by one."
    ).tag(config=True)

    @default("catalog_file")
    def _catalog_file_default(self):
        return str(files("science_gateway.jupyter_ext") / "demo_data" / "catalog.json")

    @default("files_dir")
    def _files_dir_default(self):
        return str(Path(self.catalog_file).parent / "files")

    @default("user")
    def _user_default(self):
        return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()

    @default("state_dir")
    def _state_dir_default(self):
        base = os.environ.get("SCIENCE_GATEWAY_STATE_DIR") or os.path.expanduser("~/.science-gateway")
        return os.path.join(base, "catalog", self.user)

    @default("display_name")
    def _display_name_default(self):
        return "Demo catalogue"

    _entries: dict | None = None

    def now(self) -> float:
        """The clock (a seam for tests)."""
        return time.time()

    # -- the read side --------------------------------------------------------------------------

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
            and (query.scope is None or e["scope"] == query.scope)
            and (not self.allowed_scopes or e["scope"] in self.allowed_scopes)
            and all(str(e["metadata"].get(k)) == v for k, v in query.filters.items())
        ]
        matches.sort(key=lambda d: d.did)
        if not (query.page or "0").isdigit():
            raise InvalidQuery(f"page token {query.page!r} was not issued by this catalogue")
        start = int(query.page or 0)
        end = start + query.limit
        return SearchPage(matches[start:end], next=str(end) if end < len(matches) else None)

    async def list_files(self, did: str) -> list[DatasetFile] | None:
        scope, _ = self.check_did(did)
        entry = self._load().get(did)
        if entry is None:
            return None
        return [DatasetFile(scope=scope, name=f["name"], bytes=f["bytes"]) for f in entry["files"]]

    # -- the stage side -------------------------------------------------------------------------

    @property
    def _requests_file(self) -> Path:
        return Path(self.state_dir) / "requests.json"

    def _read_requests(self) -> list[dict]:
        try:
            return json.loads(self._requests_file.read_text())["requests"]
        except FileNotFoundError:
            return []

    def _write_requests(self, requests: list[dict]) -> None:
        path = self._requests_file
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"requests": requests}, indent=1))
        os.replace(tmp, path)

    def _local_path(self, scope: str, name: str, file_name: str) -> Path:
        return Path(self.state_dir) / "data" / scope / name / file_name

    def _evaluate(self, record: dict) -> StageRequest:
        """Bring one request's files up to date (copying those that are due) and report it."""
        entry = self._load().get(record["did"])
        scope, name = parse_did(record["did"])
        dataset_files = entry["files"] if entry else []
        total = len(dataset_files)
        elapsed = self.now() - record["created_at"]
        paths, failed, in_flight = [], [], 0
        for i, f in enumerate(dataset_files):
            dest = self._local_path(scope, name, f["name"])
            due = not record["tape"] or elapsed >= self.tape_recall_seconds * (i + 1) / total
            if not dest.exists() and due:
                src = Path(self.files_dir) / scope / name / f["name"]
                try:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, dest)
                except OSError as e:
                    failed.append(FailedFile(f"{scope}:{f['name']}", f"copy failed: {e.strerror}"))
                    continue
            if dest.exists():
                paths.append(str(dest))
            else:
                in_flight += 1
        done = len(paths)
        state = READY if done == total else (IN_PROGRESS if in_flight else FAILED)
        error = failed[0].reason if failed else None
        return StageRequest(
            id=record["id"],
            did=record["did"],
            state=state,
            files_total=total,
            files_done=done,
            files_in_flight=in_flight,
            files_failed=len(failed),
            bytes_total=sum(f["bytes"] for f in dataset_files),
            tape_recall=record["tape"],
            message=progress_message(state, done, total, in_flight, len(failed), record["tape"], error),
            failed=failed,
            paths=paths,
            created_at=_iso(record["created_at"]),
        )

    async def stage(self, did: str) -> StageRequest | None:
        self.check_did(did)
        entry = self._load().get(did)
        if entry is None:
            return None
        requests = self._read_requests()
        for record in requests:
            if record["did"] == did:
                return _reused(self._evaluate(record))
        need = sum(f["bytes"] for f in entry["files"])
        used = sum(
            sum(f["bytes"] for f in self._load()[r["did"]]["files"]) for r in requests if r["did"] in self._load()
        )
        if used + need > self.quota_bytes:
            raise QuotaExceeded(
                f"staging {did} needs {format_bytes(need)} but only {format_bytes(max(self.quota_bytes - used, 0))} "
                f"of your {format_bytes(self.quota_bytes)} quota is free; cancel requests you no longer need"
            )
        record = {
            "id": uuid.uuid4().hex,
            "did": did,
            "created_at": self.now(),
            "tape": entry.get("availability") == "tape",
        }
        self._write_requests(requests + [record])
        return self._evaluate(record)

    async def status(self) -> list[StageRequest]:
        return [self._evaluate(r) for r in self._read_requests()]

    async def get_request(self, request_id: str) -> StageRequest | None:
        check_request_id(request_id)
        for record in self._read_requests():
            if record["id"] == request_id:
                return self._evaluate(record)
        return None

    async def cancel(self, request_id: str) -> bool:
        check_request_id(request_id)
        requests = self._read_requests()
        keep = [r for r in requests if r["id"] != request_id]
        if len(keep) == len(requests):
            return False
        self._write_requests(keep)
        for record in requests:
            if record["id"] == request_id:
                scope, name = parse_did(record["did"])
                shutil.rmtree(Path(self.state_dir) / "data" / scope / name, ignore_errors=True)
        return True


def _reused(request: StageRequest) -> StageRequest:
    return replace(request, reused=True)
