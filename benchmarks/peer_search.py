"""The peer's search (rucio-jupyterlab 41's DID search handler logic), timed; run with the peer's venv.

    /path/to/peer-venv/bin/python peer_search.py '{"url": ..., "auth_url": ..., "account": ...,
        "password": ..., "scope": ..., "filters": "datatype=RAW", "runs": 3}'

Calls the handler's implementation (``DIDSearchHandlerImpl.search_did``) as its Tornado handler
does, with its own Rucio REST client, so every call it makes to Rucio goes through ``url`` (the
counting proxy). Prints one JSON line: the time of each run and the number of rows returned.
"""

import json
import os
import sys
import tempfile
import time

os.environ["HOME"] = tempfile.mkdtemp(prefix="peer-home-")  # its sqlite cache lives in $HOME

from rucio_jupyterlab.handlers.did_search import ROW_LIMIT, DIDSearchHandlerImpl  # noqa: E402
from rucio_jupyterlab.rucio.rucio import RucioAPI  # noqa: E402


def main():
    args = json.loads(sys.argv[1])
    instance = {"name": "bench", "rucio_base_url": args["url"], "rucio_auth_url": args["auth_url"],
                "wildcard_enabled": True, "mode": "replica"}
    auth = {"username": args["account"], "password": args["password"], "account": args["account"]}
    api = RucioAPI(instance, "userpass", auth)
    api._get_auth_token()  # log in first (through auth_url, not counted)
    handler = DIDSearchHandlerImpl("bench", api)
    times, rows = [], 0
    for _ in range(args["runs"]):
        t = time.perf_counter()
        rows = len(handler.search_did(args["scope"], "*", "dataset", args["filters"], ROW_LIMIT))
        times.append(time.perf_counter() - t)
    print(json.dumps({"times": times, "rows": rows}))


if __name__ == "__main__":
    main()
