"""The Rucio test fixture data: RSEs, accounts, scopes, metadata conventions and datasets.

Idempotent: everything that exists is left as it is. Run with the Rucio server's own Python,
``RUCIO_CONFIG`` pointing at the config whose ``[client]`` section logs in as root, and
``SG_STORAGE``, ``SG_ALICE_PASSWORD``, ``SG_BOB_PASSWORD`` set (scripts/services/rucio does).

The layout:

- ``SG-TAPE`` (rse_type TAPE, the archive) and ``SG-DISK`` (the disk the notebooks mount), both
  ``file://`` on local directories under ``$SG_STORAGE``.
- ``SG-USERDISK`` (DISK, ``file://`` on a world-writable directory): where users publish
  results; Rucio's generic policy lets any account add replicas on a ``*USERDISK`` RSE, and each
  account gets its own scope ``user.<account>`` (only it may add datasets there) and quota.
- accounts ``alice`` (10 GB on SG-DISK) and ``bob`` (a 2 kB quota, so any stage-in exceeds it),
  with userpass identities.
- accounts ``alice_astro`` and ``bob_admin`` (10 GB each on SG-DISK) for the OIDC provider's users
  ``alice`` and ``bob`` (scripts/services/oidc): each has the OIDC identity
  ``SUB=<sub>, ISS=<issuer>`` of that person as its default, so Rucio maps their JWT access tokens
  to these accounts (what a site admin does with ``rucio-admin identity add --type OIDC``;
  docs/catalog.md). ``$SG_OIDC_ISSUER`` is the issuer.
- scopes ``astro`` and ``calib`` (visible to the gateway's users) and ``private`` (not).
- datasets with built-in metadata (``project``, ``datatype``) and free-form metadata
  (``instrument``, ``target``): some on tape only, some already on disk too.
"""

import hashlib
import os
import zlib
from pathlib import Path

from rucio.client import Client
from rucio.common.exception import Duplicate, RSENotFound, RSEProtocolNotSupported
from rucio.rse import rsemanager

STORAGE = Path(os.environ["SG_STORAGE"])
RSES = {"SG-TAPE": ("TAPE", STORAGE / "tape"), "SG-DISK": ("DISK", STORAGE / "disk"),
        "SG-USERDISK": ("DISK", STORAGE / "userdisk")}
#: the RSE users publish to, and each account's quota there
PUBLISH_RSE, PUBLISH_QUOTA = "SG-USERDISK", 10**9
ACCOUNTS = {"alice": ("SG_ALICE_PASSWORD", 10 * 10**9), "bob": ("SG_BOB_PASSWORD", 2000)}
#: Rucio account of each OIDC provider user (their ``sub``), and its quota on SG-DISK
OIDC_ACCOUNTS = {"alice": ("alice_astro", 10 * 10**9), "bob": ("bob_admin", 10 * 10**9)}
SCOPES = ["astro", "calib", "private"]
DATATYPES = ["RAW", "CALIB", "IMAGE", "TEST"]


def datasets():
    """(scope, name, built-in metadata, free-form metadata, n files, on disk too)."""
    yield "astro", "run2024.raw.0001", {"project": "run2024", "datatype": "RAW"}, {"instrument": "lst", "target": "crab"}, 3, True
    yield "astro", "run2024.raw.0002", {"project": "run2024", "datatype": "RAW"}, {"instrument": "lst", "target": "mrk421"}, 4, False
    yield "astro", "run2024.raw.0003", {"project": "run2024", "datatype": "RAW"}, {"instrument": "magic", "target": "crab"}, 2, False
    yield "astro", "run2023.raw.0007", {"project": "run2023", "datatype": "RAW"}, {"instrument": "lst", "target": "crab"}, 3, False
    yield "calib", "run2024.calib.0001", {"project": "run2024", "datatype": "CALIB"}, {"instrument": "lst"}, 2, True
    yield "private", "run2024.raw.secret", {"project": "run2024", "datatype": "RAW"}, {"instrument": "lst"}, 1, False
    for i in range(30):  # enough to page through
        yield "astro", f"survey.tile.{i:04d}", {"project": "survey", "datatype": "IMAGE"}, {"band": "g" if i % 2 else "r"}, 1, False


def oidc_identity(sub, issuer):
    """The identity string Rucio derives from a token's ``sub`` and ``iss`` claims
    (``rucio.core.oidc.oidc_identity_string``: note the space after the comma)."""
    return f"SUB={sub}, ISS={issuer}"


def quietly(call, *args, **kwargs):
    try:
        return call(*args, **kwargs)
    except Duplicate:
        return None


def ensure_rses(client):
    for rse, (rse_type, path) in RSES.items():
        try:
            client.get_rse(rse)
        except RSENotFound:
            client.add_rse(rse, rse_type=rse_type, deterministic=True)
        path.mkdir(parents=True, exist_ok=True)
        if rse == PUBLISH_RSE:
            # every user's server uploads there as its own unix user; each account's folder is
            # user/<account> (Rucio's hash layout for scope user.<account>)
            for folder in (path, path / "user"):
                folder.mkdir(exist_ok=True)
                folder.chmod(0o1777)
        try:
            schemes = {p["scheme"] for p in client.get_protocols(rse)}
        except RSEProtocolNotSupported:
            schemes = set()
        if "file" not in schemes:
            client.add_protocol(rse, {
                "scheme": "file", "hostname": "localhost", "port": 0, "prefix": str(path) + "/",
                "impl": "rucio.rse.protocols.posix.Default",
                "domains": {
                    "lan": {"read": 1, "write": 1, "delete": 1},
                    "wan": {"read": 1, "write": 1, "delete": 1,
                            "third_party_copy_read": 1, "third_party_copy_write": 1},
                },
            })
        client.add_rse_attribute(rse, "site", "SG")
    names = list(RSES)
    for src in names:
        for dst in names:
            if src != dst and not client.get_distance(src, dst):
                client.add_distance(src, dst, {"distance": 1})


def ensure_accounts(client):
    for account, (pwd_env, quota) in ACCOUNTS.items():
        quietly(client.add_account, account, "USER", f"{account}@localhost")
        quietly(client.add_identity, account=account, identity=account, authtype="USERPASS",
                email=f"{account}@localhost", default=True, password=os.environ[pwd_env])
        client.set_local_account_limit(account, "SG-DISK", quota)
        client.set_local_account_limit(account, PUBLISH_RSE, PUBLISH_QUOTA)
        quietly(client.add_scope, account, f"user.{account}")
    for rse in RSES:
        client.set_local_account_limit("root", rse, 10**13)
    issuer = os.environ["SG_OIDC_ISSUER"]
    for sub, (account, quota) in OIDC_ACCOUNTS.items():
        quietly(client.add_account, account, "USER", f"{sub}@university.example")
        quietly(client.add_identity, account=account, identity=oidc_identity(sub, issuer), authtype="OIDC",
                email=f"{sub}@university.example", default=True)
        client.set_local_account_limit(account, "SG-DISK", quota)
    for scope in SCOPES:
        quietly(client.add_scope, "root", scope)


def ensure_metadata(client):
    keys = set(client.list_keys() or [])
    if "datatype" not in keys:
        quietly(client.add_key, "datatype", "ALL")
    values = set(client.list_values("datatype") or [])
    for value in DATATYPES:
        if value not in values:
            quietly(client.add_value, "datatype", value)


def file_bytes(scope, name):
    # the header row first: np.genfromtxt(names=True, comments="#") reads it as the column names
    body = f"event,energy\n# {scope}:{name}\n" + "".join(f"{i},{(i * 7919) % 1000 / 10:.1f}\n" for i in range(64))
    return body.encode()


def write_replica(rse_info, scope, name, data):
    pfn = rsemanager.lfns2pfns(rse_info, [{"scope": scope, "name": name}], operation="write")[f"{scope}:{name}"]
    path = Path(pfn.split("://localhost", 1)[1])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def ensure_datasets(client):
    rse_info = {rse: rsemanager.get_rse_info(rse) for rse in RSES}
    existing = {}
    for scope in SCOPES:
        existing[scope] = set(client.list_dids(scope, [{"name": "*"}], did_type="dataset"))
    for scope, name, builtin, freeform, nfiles, on_disk in datasets():
        if name in existing[scope]:
            continue
        files = []
        for i in range(nfiles):
            fname = f"{name}.part{i:03d}.csv"
            data = file_bytes(scope, fname)
            files.append({
                "scope": scope, "name": fname, "bytes": len(data),
                "adler32": f"{zlib.adler32(data) & 0xffffffff:08x}", "md5": hashlib.md5(data).hexdigest(),
                "_data": data,
            })
        for rse in ["SG-TAPE"] + (["SG-DISK"] if on_disk else []):
            for f in files:
                write_replica(rse_info[rse], scope, f["name"], f["_data"])
            client.add_replicas(rse, [{k: v for k, v in f.items() if k != "_data"} for f in files])
        client.add_dataset(scope, name, meta=builtin)
        client.attach_dids(scope, name, [{"scope": scope, "name": f["name"]} for f in files])
        client.set_metadata_bulk(scope, name, freeform)
        client.close(scope, name)
        # every replica is protected by a rule, as in production: the archive copy on tape,
        # and a disk copy for the datasets that are already readable
        for rse in ["SG-TAPE"] + (["SG-DISK"] if on_disk else []):
            client.add_replication_rule([{"scope": scope, "name": name}], 1, rse, comment="fixture")


def main():
    client = Client()
    ensure_rses(client)
    ensure_accounts(client)
    ensure_metadata(client)
    ensure_datasets(client)


if __name__ == "__main__":
    main()
