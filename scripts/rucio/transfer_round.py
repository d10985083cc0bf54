"""One round of Rucio's own transfer machinery, in one process, copying local files.

Runs the judge-cleaner and -evaluator, the conveyor submitter, poller and finisher (``once=True``) with
Rucio's ``mock`` transfertool, whose ``submit`` is made here to really copy ``file://`` PFNs;
a copy that fails (e.g. a missing source file) is reported FAILED with its reason, so after
Rucio's retries the rule goes STUCK with that reason, as it would with FTS. Then the abacus
daemons update account usage and dataset replicas. Run with the Rucio server's Python and
``RUCIO_CONFIG`` (``sgtest.rucio_transfers`` does).

    python transfer_round.py [--cycles N] [--bulk N] [--abacus-only]

``--bulk`` limits how many transfers the submitter takes per cycle (to watch progress);
``--cycles`` repeats submit/poll/finish (a failing copy needs 4 cycles to go STUCK).
"""

import argparse
import logging
import os
import shutil
import uuid
from urllib.parse import urlparse

from rucio.db.sqla.constants import RequestState
from rucio.transfertool import mock

#: request id -> reason, for copies that failed in this process
FAILED: dict[str, str] = {}


def url_path(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("file", "mock"):
        raise ValueError(f"only file:// URLs can be copied here, not {url}")
    return os.path.normpath(parsed.path)


def copying_submit(self, transfers, job_params, timeout=None):
    for transfer in transfers:
        request_id = transfer.rws.request_id
        try:
            src = url_path(transfer.source_url(transfer.src))
            dst = url_path(transfer.dest_url)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            tmp = f"{dst}.part-{request_id}"
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        except (OSError, ValueError) as e:
            FAILED[request_id] = f"TRANSFER [{getattr(e, 'errno', None) or 'EINVAL'}] copy failed: {e.strerror if isinstance(e, OSError) else e}"
    return str(uuid.uuid1())


class CopyStatusReport(mock.MockTransferStatusReport):
    supported_db_fields = ["state", "external_id", "err_msg"]

    def __init__(self, request_id, external_id):
        super().__init__(request_id, external_id)
        self.err_msg = FAILED.get(request_id)
        if self.err_msg:
            self.state = RequestState.FAILED


def copying_bulk_query(self, requests_by_eid, timeout=None):
    return {
        eid: {rid: CopyStatusReport(rid, eid) for rid in requests}
        for eid, requests in requests_by_eid.items()
    }


def abacus():
    from rucio.daemons.abacus import account, collection_replica

    account.account_update(once=True)
    collection_replica.collection_replica_update(once=True)


def cycle(bulk):
    from rucio.daemons.conveyor.finisher import finisher
    from rucio.daemons.judge.cleaner import rule_cleaner
    from rucio.daemons.conveyor.poller import poller
    from rucio.daemons.conveyor.submitter import submitter
    from rucio.daemons.judge.evaluator import re_evaluator

    rule_cleaner(once=True)  # removes expired (e.g. cancelled) rules
    re_evaluator(once=True, did_limit=1000)
    submitter(once=True, partition_wait_time=0, bulk=bulk, transfertools=["mock"], filter_transfertool=None)
    poller(once=True, partition_wait_time=0, older_than=0, transfertool="mock", filter_transfertool=None)
    finisher(once=True, partition_wait_time=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=1)
    parser.add_argument("--bulk", type=int, default=1000)
    parser.add_argument("--abacus-only", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    mock.MockTransfertool.submit = copying_submit
    mock.MockTransfertool.bulk_query = copying_bulk_query
    if not args.abacus_only:
        for _ in range(args.cycles):
            cycle(args.bulk)
    abacus()


if __name__ == "__main__":
    main()
