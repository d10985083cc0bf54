"""The embedded default's catalogue: a few small example datasets bundled with the package.

Staging copies the bundled files into a per-user directory under the gateway's state directory;
the requests are kept in a JSON file there, so they outlive the kernel and the server. Datasets
marked as on tape show a recall: their files become ready one by one over
:attr:`DemoCatalog.tape_recall_seconds`. A publish copies the files into the user's state
directory (``published/<scope>/<name>/``) and lists the dataset, with its metadata and
provenance, in ``published.json`` there: the user's later searches find it like a bundled one.
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

from ...core.catalog import (
    FAILED,
    CatalogError,
    IN_PROGRESS,
    READY,
    Dataset,
    DatasetFile,
    FailedFile,
    InvalidQuery,
    QuotaExceeded,
    SearchPage,
    SearchQuery,
    StageRequest,
    parse_did,
    progress_message,
)
from ...core.clock import utcnow
from ...core.publish import FileChecksum, Provenance, PublishedDataset, checksums
from ...core.text import format_bytes, quote_prefix
from .base import CatalogBackend


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

    @default("publish_scope")
    def _publish_scope_default(self):
        scope = f"user.{self.user}"
        try:
            parse_did(f"{scope}:x")
        except ValueError:
            return ""  # a user name the DID grammar cannot hold: no publishing
        return scope

    @default("max_workers")
    def _max_workers_default(self):
        # one thread: the request list is read, changed and written by one file operation at a time
        return 1

    _entries: dict | None = None

    def now(self) -> float:
        """The clock (a seam for tests)."""
        return utcnow()

    # -- the read side --------------------------------------------------------------------------

    def _load(self) -> dict:
        """The bundled datasets and this user's published ones."""
        if self._entries is None:
            with open(self.catalog_file) as f:
                raw = json.load(f)
            self._entries = {f"{d['scope']}:{d['name']}": d for d in raw["datasets"]}
        published = self._read_published()
        if not published:
            return self._entries
        return {**{f"{d['scope']}:{d['name']}": d for d in published}, **self._entries}

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

    def _search_sync(self, query: SearchQuery) -> SearchPage:
        if not (query.page or "0").isascii() or not (query.page or "0").isdigit():
            raise InvalidQuery(f"page token {quote_prefix(query.page)} was not issued by this catalogue")
        matches = [
            self._dataset(e)
            for e in self._load().values()
            if fnmatch.fnmatchcase(e["name"], query.pattern)
            and (query.scope is None or e["scope"] == query.scope)
            and (not self.allowed_scopes or e["scope"] in self.visible_scopes)
            and all(str(e["metadata"].get(k)) == v for k, v in query.filters.items())
        ]
        matches.sort(key=lambda d: d.did)
        start = int(query.page or 0)
        end = start + query.limit
        return SearchPage(matches[start:end], next=str(end) if end < len(matches) else None)

    async def _search(self, query: SearchQuery) -> SearchPage:
        return await self.run_blocking(self._search_sync, query)

    def _list_files_sync(self, scope: str, name: str) -> list[DatasetFile] | None:
        entry = self._load().get(f"{scope}:{name}")
        if entry is None:
            return None
        return [DatasetFile(scope=scope, name=f["name"], bytes=f["bytes"]) for f in entry["files"]]

    async def _list_files(self, scope: str, name: str) -> list[DatasetFile] | None:
        return await self.run_blocking(self._list_files_sync, scope, name)

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
                src = Path(entry.get("files_dir") or self.files_dir) / scope / name / f["name"]
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

    def _stage_sync(self, scope: str, name: str) -> StageRequest | None:
        did = f"{scope}:{name}"
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

    async def _stage(self, scope: str, name: str) -> StageRequest | None:
        return await self.run_blocking(self._stage_sync, scope, name)

    def _status_sync(self) -> list[StageRequest]:
        return [self._evaluate(r) for r in self._read_requests()]

    async def _status(self) -> list[StageRequest]:
        return await self.run_blocking(self._status_sync)

    def _get_request_sync(self, request_id: str) -> StageRequest | None:
        for record in self._read_requests():
            if record["id"] == request_id:
                return self._evaluate(record)
        return None

    async def _get_request(self, request_id: str) -> StageRequest | None:
        return await self.run_blocking(self._get_request_sync, request_id)

    def _cancel_sync(self, request_id: str) -> bool:
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

    async def _cancel(self, request_id: str) -> bool:
        return await self.run_blocking(self._cancel_sync, request_id)

    # -- the publish side -------------------------------------------------------------------------

    @property
    def _published_file(self) -> Path:
        return Path(self.state_dir) / "published.json"

    def _read_published(self) -> list[dict]:
        try:
            return json.loads(self._published_file.read_text())["datasets"]
        except FileNotFoundError:
            return []

    def _publish_sync(self, scope, name, files, metadata, provenance: Provenance) -> PublishedDataset:
        did = f"{scope}:{name}"
        if did in self._load():
            raise CatalogError(f"you already published {did}; publish under another name", status=409)
        base = Path(self.state_dir) / "published"
        target = base / scope / name
        shutil.rmtree(target, ignore_errors=True)  # what a publish that failed half-way left
        target.mkdir(parents=True, mode=0o700)
        entries = []
        for real, _relative, did_name in files:
            shutil.copyfile(real, target / did_name)
            entries.append({"name": did_name, **checksums(target / did_name)})
        published = self._read_published()
        published.append({
            "scope": scope, "name": name, "metadata": {**metadata, **provenance.to_metadata()},
            "availability": "disk", "files": entries, "files_dir": str(base), "sources": [f[1] for f in files],
        })
        tmp = self._published_file.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"datasets": published}, indent=1))
        os.replace(tmp, self._published_file)
        return PublishedDataset(
            scope=scope, name=name, rse="demo", metadata=dict(metadata), provenance=provenance,
            files=[FileChecksum(scope=scope, name=e["name"], bytes=e["bytes"], md5=e["md5"], adler32=e["adler32"]) for e in entries],
            sources=[f[1] for f in files],
        )

    async def _publish(self, scope, name, files, metadata, provenance) -> PublishedDataset:
        return await self.run_blocking(self._publish_sync, scope, name, files, metadata, provenance)

    def _file_checksums_sync(self, scope: str, name: str) -> list[FileChecksum] | None:
        entry = self._load().get(f"{scope}:{name}")
        if entry is None:
            return None
        found = []
        for f in entry["files"]:
            if "md5" not in f:
                path = Path(entry.get("files_dir") or self.files_dir) / scope / name / f["name"]
                f = {**f, **checksums(path)}
            found.append(FileChecksum(scope=scope, name=f["name"], bytes=f["bytes"], md5=f["md5"], adler32=f["adler32"]))
        return found

    async def _file_checksums(self, scope: str, name: str) -> list[FileChecksum] | None:
        return await self.run_blocking(self._file_checksums_sync, scope, name)


def _reused(request: StageRequest) -> StageRequest:
    return replace(request, reused=True)
