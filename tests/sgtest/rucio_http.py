"""A fake Rucio REST server at the HTTP boundary: rucio-clients talks to it as to a real one.

For load: a catalogue of any size without the shared Rucio service (which is only read from).
It serves the calls :class:`science_gateway.jupyter_ext.catalog.rucio.RucioCatalog` makes for
search, file lists and the status of requests, with generated answers:

- scope ``bench`` holds ``datasets`` datasets ``bench.ds.000000``... that match every search
  filter (``list_dids`` honours the server-side ``limit``), plus ``bench:big`` with ``big_files``
  files;
- the account has ``rules`` REPLICATING rules on ``rse``, of ``rule_files`` files each, all
  "updated now" (an incremental status refresh gets every rule every time: the worst case).

Answers are rendered once and kept as bytes, so the fake itself stays cheap under load. Run it
in its own process (``python -m sgtest.rucio_http --port N``) or in a thread of a test
(:func:`serve_in_thread`). It counts the calls per route (``GET /_fake/counts``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import threading
from collections import Counter
from urllib.parse import parse_qs, unquote, urlparse

from tornado import httpserver, web
from tornado.netutil import bind_sockets

DATE_FORMAT = "%a, %d %b %Y %H:%M:%S UTC"  # rucio.common.utils.DATE_FORMAT
STREAM = "application/x-json-stream"
SCOPE = "bench"
BIG = "big"


def _date(value: datetime.datetime) -> str:
    return value.strftime(DATE_FORMAT)


class FakeRucio:
    """The generated catalogue and its rendered answers."""

    def __init__(self, datasets=100_000, big_files=100_000, rules=20, rule_files=100, rse="NOTEBOOK_DISK",
                 account="bench", max_rows=10_100):
        self.datasets, self.big_files, self.rse, self.account = datasets, big_files, rse, account
        self.counts = Counter()
        self._rows = [self._line({"scope": SCOPE, "name": self.dataset_name(i), "did_type": "DATASET",
                                  "bytes": 100 * 1000, "length": 100}) for i in range(min(datasets, max_rows))]
        self._big = b"".join(self._line({"scope": SCOPE, "name": f"big.file.{i:06d}", "bytes": 1000,
                                         "adler32": "01234567", "guid": None, "events": None})
                             for i in range(big_files))
        created = datetime.datetime(2026, 1, 1)
        self.rule_list = [
            {"id": f"{i:032x}", "scope": SCOPE, "name": self.dataset_name(i), "account": account,
             "rse_expression": rse, "state": "REPLICATING", "locks_ok_cnt": rule_files // 2,
             "locks_replicating_cnt": rule_files - rule_files // 2, "locks_stuck_cnt": 0, "bytes": rule_files * 1000,
             "comments": "science-gateway stage-in", "error": None, "created_at": _date(created + datetime.timedelta(seconds=i)),
             "expires_at": None}
            for i in range(rules)
        ]
        self.rule_file_lists = {
            r["name"]: b"".join(self._line({"scope": SCOPE, "name": f"{r['name']}.f{j:04d}", "bytes": 1000})
                                for j in range(rule_files))
            for r in self.rule_list
        }

    @staticmethod
    def dataset_name(i: int) -> str:
        return f"bench.ds.{i:06d}"

    @staticmethod
    def _line(obj) -> bytes:
        return json.dumps(obj).encode() + b"\n"

    def rules_now(self) -> bytes:
        now = _date(datetime.datetime.now(datetime.timezone.utc))
        return b"".join(self._line({**r, "updated_at": now}) for r in self.rule_list)

    def search(self, limit: int | None) -> bytes:
        return b"".join(self._rows[: limit or len(self._rows)])

    def files(self, name: str) -> bytes | None:
        if name == BIG:
            return self._big
        return self.rule_file_lists.get(name)

    def metadata(self, dids: list[dict]) -> bytes:
        return b"".join(self._line({"scope": d["scope"], "name": d["name"], "project": "bench", "datatype": "RAW",
                                    "run": 7, "bytes": 100 * 1000, "length": 100}) for d in dids)

    def dataset_replicas(self, dids: list[dict]) -> bytes:
        return b"".join(self._line({"scope": d["scope"], "name": d["name"], "rse": self.rse, "state": "AVAILABLE",
                                    "available_length": 100, "length": 100}) for d in dids)

    def rses(self) -> bytes:
        return self._line({"rse": self.rse, "rse_type": "DISK"}) + self._line({"rse": "TAPE", "rse_type": "TAPE"})

    def rse_info(self) -> dict:
        return {"rse": self.rse, "deterministic": True, "lfn2pfn_algorithm": "hash", "rse_type": "DISK",
                "protocols": [{"scheme": "file", "hostname": "", "port": 0, "prefix": "/",
                               "domains": {"wan": {"read": 1, "write": 1, "delete": 1}}}]}


class _Handler(web.RequestHandler):
    def initialize(self, fake: FakeRucio):
        self.fake = fake

    def stream(self, body: bytes):
        self.set_header("Content-Type", STREAM)
        self.finish(body)

    def missing(self, cls: str, message: str):
        self.set_status(404)
        self.set_header("Content-Type", "application/json")
        self.set_header("ExceptionClass", cls)
        self.set_header("ExceptionMessage", message)
        self.finish(json.dumps({"ExceptionClass": cls, "ExceptionMessage": message}))

    def get(self, path):
        fake, parts = self.fake, [unquote(p) for p in path.strip("/").split("/")]
        query = parse_qs(urlparse(self.request.uri).query)
        fake.counts[parts[0] + ("/" + parts[-1] if parts[0] == "dids" and len(parts) > 2 else "")] += 1
        if parts == ["auth", "userpass"]:
            self.set_header("X-Rucio-Auth-Token", "fake-rucio-token")
            expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
            self.set_header("X-Rucio-Auth-Token-Expires", _date(expires))
            return self.finish()
        if parts == ["_fake", "counts"]:
            return self.finish(dict(fake.counts))
        if len(parts) == 4 and parts[0] == "dids" and parts[2:] == ["dids", "search"]:
            if parts[1] != SCOPE:
                return self.missing("ScopeNotFound", f"scope {parts[1]} not found")
            limit = int(query["limit"][0]) if "limit" in query else None
            return self.stream(fake.search(limit))
        if len(parts) == 4 and parts[0] == "dids" and parts[3] == "files":
            body = fake.files(parts[2]) if parts[1] == SCOPE else None
            if body is None:
                return self.missing("DataIdentifierNotFound", f"{parts[1]}:{parts[2]} not found")
            return self.stream(body)
        if parts == ["rses"]:
            return self.stream(fake.rses())
        if len(parts) == 2 and parts[0] == "rses":
            self.set_header("Content-Type", "application/json")
            return self.finish(json.dumps(fake.rse_info()))
        if parts == ["rules"]:
            return self.stream(fake.rules_now())
        self.missing("RucioException", f"the fake Rucio does not serve GET {path[:80]}")

    def post(self, path):
        parts = path.strip("/").split("/")
        body = json.loads(self.request.body or b"{}")
        self.fake.counts["/".join(parts)] += 1
        if parts == ["dids", "bulkmeta"]:
            return self.stream(self.fake.metadata(body["dids"]))
        if parts == ["replicas", "datasets_bulk"]:
            return self.stream(self.fake.dataset_replicas(body["dids"]))
        self.missing("RucioException", f"the fake Rucio does not serve POST {path[:80]}")


def make_app(fake: FakeRucio) -> web.Application:
    return web.Application([(r"/(.*)", _Handler, {"fake": fake})])


def backend_traits(url: str, mount_path: str, fake: FakeRucio) -> dict:
    """RucioCatalog settings that point at a fake at ``url`` (userpass; every status call refreshes)."""
    return {
        "rucio_host": url, "auth_type": "userpass", "account": fake.account, "password": "fake",
        "rse": fake.rse, "mount_path": mount_path, "allowed_scopes": [SCOPE],
        "status_refresh_seconds": 0, "idle_refresh_seconds": 0,
    }


def serve_in_thread(fake: FakeRucio, port: int = 0) -> tuple[str, callable]:
    """Serve ``fake`` on 127.0.0.1 from a thread of this process; returns (URL, stop)."""
    ready, holder = threading.Event(), {}

    def run():
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        server = httpserver.HTTPServer(make_app(fake))
        sockets = bind_sockets(port, "127.0.0.1")
        server.add_sockets(sockets)
        holder.update(loop=loop, server=server, port=sockets[0].getsockname()[1])
        ready.set()
        loop.run_forever()
        server.stop()
        loop.close()

    thread = threading.Thread(target=run, name="fake-rucio", daemon=True)
    thread.start()
    ready.wait(30)

    def stop():
        holder["loop"].call_soon_threadsafe(holder["loop"].stop)
        thread.join(10)

    return f"http://127.0.0.1:{holder['port']}", stop


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--datasets", type=int, default=100_000)
    parser.add_argument("--big-files", type=int, default=100_000)
    parser.add_argument("--rules", type=int, default=20)
    parser.add_argument("--rule-files", type=int, default=100)
    args = parser.parse_args(argv)
    fake = FakeRucio(args.datasets, args.big_files, args.rules, args.rule_files)

    async def serve():
        make_app(fake).listen(args.port, "127.0.0.1")
        print(f"fake Rucio on http://127.0.0.1:{args.port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
