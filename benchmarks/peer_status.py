"""The peer's status tracking (rucio-jupyterlab 41's DID polling), for a time; run with the peer's venv.

    /path/to/peer-venv/bin/python peer_status.py '{"url": ..., "auth_url": ..., "account": ...,
        "password": ..., "rse": ..., "mount_path": ..., "dids": ["scope:name", ...],
        "start_at": EPOCH_SECONDS, "seconds": 120, "interval": 10}'

Replays what it does for datasets a user made available. Its frontend's polling manager asks the
server extension for each watched dataset's details every ``interval`` seconds, all at once
(``GET did?namespace=..&did=..&poll=1``), and stops watching a dataset once none of its files is
replicating or fetching. Its handler (41.0.0) reads only ``force``, not ``poll``, so each poll is
``ReplicaModeHandler.get_did_details(scope, name, False)`` run on its 4-thread API executor: the
file replicas cached in its sqlite database, refreshed in the background, plus the dataset's rules.
Its own Rucio REST client talks to ``url`` (the counting proxy). Before ``start_at`` it has already
shown every dataset once (its cache is warm, as in a running server); then it polls for ``seconds``.
Prints one JSON line: for each dataset, when (naive UTC, ISO) it first showed every file available,
and how many calls its frontend made to its server extension (one per watched dataset per poll).
"""

import concurrent.futures
import datetime
import json
import os
import sys
import tempfile
import time

os.environ["HOME"] = tempfile.mkdtemp(prefix="peer-home-")  # its sqlite cache lives in $HOME

from rucio_jupyterlab.handlers.base import MAX_WORKERS  # noqa: E402
from rucio_jupyterlab.mode_handlers.replica import ReplicaModeHandler  # noqa: E402
from rucio_jupyterlab.rucio.rucio import RucioAPI  # noqa: E402

WATCHING = ("REPLICATING", "FETCHING")  # the frontend keeps polling a dataset with a file in these


def main():
    args = json.loads(sys.argv[1])
    instance = {"name": "bench", "rucio_base_url": args["url"], "rucio_auth_url": args["auth_url"],
                "mode": "replica", "destination_rse": args["rse"], "rse_mount_path": args["mount_path"]}
    auth = {"username": args["account"], "password": args["password"], "account": args["account"]}
    api = RucioAPI(instance, "userpass", auth)
    api._get_auth_token()  # log in first (through auth_url, not counted)
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=MAX_WORKERS)  # its rucio_api_executor

    def details(did):
        scope, name = did.split(":")
        # a handler per request, as its Tornado handler makes one
        return did, ReplicaModeHandler("bench", api).get_did_details(scope, name, False)

    watched, ready, polls, calls = set(args["dids"]), {}, 0, 0
    list(executor.map(details, sorted(watched)))  # the datasets were shown before: fetch and cache
    concurrent.futures.wait(list(ReplicaModeHandler._inflight_fetches.values()), timeout=60)
    time.sleep(max(0.0, args["start_at"] - time.time()))
    stop = time.monotonic() + args["seconds"]
    while time.monotonic() < stop:
        tick = time.monotonic()
        calls += len(watched)  # one call of its frontend to its server extension per watched dataset
        for did, files in executor.map(details, sorted(watched)):
            if files and all(f["status"] == "OK" for f in files) and did not in ready:
                ready[did] = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None).isoformat()
            if not any(f["status"] in WATCHING for f in files):
                watched.discard(did)
        polls += 1
        time.sleep(max(0.0, args["interval"] - (time.monotonic() - tick)))
    print(json.dumps({"ready": ready, "polls": polls, "calls": calls, "still_watched": len(watched)}))


if __name__ == "__main__":
    main()
