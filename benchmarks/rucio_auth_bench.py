"""Rucio's authentication cost per call: the user's OIDC token (JWT) vs a userpass token.

Against the local Rucio stack and OIDC provider (``scripts/services/rucio start``,
``scripts/services/oidc start``): Rucio 41.5.1 under gunicorn (4 workers), trusting the provider's
JWT access tokens (``[oidc]`` in rucio.cfg). Each variant calls ``GET /accounts/whoami`` (the
cheapest authenticated call: token check, one account row) with plain ``requests`` on one
keep-alive session, so what differs is only how Rucio checks the token:

- *no auth*: ``GET /ping``, the floor (no token at all).
- *userpass*: a token Rucio issued (``/auth/userpass``, once), looked up in its token table and its
  per-worker cache.
- *oidc*: the user's JWT access token from the provider's ``gateway-rucio`` client (what the
  token keeper writes), after Rucio has seen it once: found in the same table and cache.
- *first call, userpass*: ``/auth/userpass`` (a new Rucio token) plus the first call with it: what
  a userpass client pays once per Rucio token lifetime (1 h by default).
- *first call, oidc*: the first call with a fresh JWT: Rucio verifies its signature against the
  issuer's keys, checks audience and scope, maps ``SUB=..., ISS=...`` to the account and stores it:
  what the gateway pays once per access token lifetime (30 s on the test provider, 1 h on Check-in).

    python benchmarks/rucio_auth_bench.py [--calls 200] [--fresh 20]

Run it with a Python that has the package installed with the ``rucio`` extra (e.g. the test venv).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from sgtest import oidc  # noqa: E402
from sgtest.services import service_env  # noqa: E402

USER = "alice"  # the provider's alice: Rucio account alice_astro (OIDC), alice (userpass)


def timed(http: requests.Session, url: str, token: str | None) -> float:
    headers = {"X-Rucio-Auth-Token": token} if token else {}
    start = time.perf_counter()
    r = http.get(url, headers=headers, timeout=30)
    elapsed = time.perf_counter() - start
    r.raise_for_status()
    return elapsed


def userpass_token(http: requests.Session, env: dict) -> str:
    r = http.get(f"{env['RUCIO_AUTH_URL']}/auth/userpass", timeout=30, headers={
        "X-Rucio-Account": env["RUCIO_ACCOUNT"], "X-Rucio-Username": env["RUCIO_USER"],
        "X-Rucio-Password": env["RUCIO_PASSWORD"],
    })
    r.raise_for_status()
    return r.headers["X-Rucio-Auth-Token"]


def ms(values: list[float]) -> str:
    values = sorted(values)
    p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
    return f"p50 {1000 * statistics.median(values):6.2f} ms  p90 {1000 * p90:6.2f} ms  (n={len(values)})"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per steady-state variant")
    parser.add_argument("--fresh", type=int, default=20, help="fresh tokens per first-call variant")
    args = parser.parse_args(argv)
    rucio, provider = service_env("rucio"), service_env("oidc")
    whoami = f"{rucio['RUCIO_URL']}/accounts/whoami"
    ping = f"{rucio['RUCIO_URL']}/ping"
    pw = oidc.password(provider, USER)

    http = requests.Session()
    up = userpass_token(http, rucio)
    jwt = oidc.code_flow_tokens(provider, "rucio", USER, pw)
    refresh = jwt["refresh_token"]
    token = jwt["access_token"]
    for _ in range(20):  # every gunicorn worker has seen both tokens
        timed(http, whoami, up)
        timed(http, whoami, token)
    print(f"Rucio {rucio['RUCIO_URL']}, whoami as {http.get(whoami, headers={'X-Rucio-Auth-Token': token}).json()['account']} (oidc)"
          f" and {http.get(whoami, headers={'X-Rucio-Auth-Token': up}).json()['account']} (userpass)")

    steady = {"no auth": [], "userpass": [], "oidc": []}
    ttl = int(provider["OIDC_ACCESS_TOKEN_TTL"])
    started = time.monotonic()
    for _ in range(args.calls):  # interleaved, so a change of the machine's load touches all alike
        if time.monotonic() - started > ttl - 10:  # a token about to expire: the next one (off the clock)
            fresh = oidc.refresh_tokens(provider, "rucio", refresh)
            refresh, token = fresh.get("refresh_token", refresh), fresh["access_token"]
            for _ in range(20):
                timed(http, whoami, token)
            started = time.monotonic()
        steady["no auth"].append(timed(http, ping, None))
        steady["userpass"].append(timed(http, whoami, up))
        steady["oidc"].append(timed(http, whoami, token))

    first = {"userpass": [], "oidc": []}
    for _ in range(args.fresh):
        fresh = oidc.refresh_tokens(provider, "rucio", refresh)  # off the clock: the provider's work
        refresh, token = fresh.get("refresh_token", refresh), fresh["access_token"]
        start = time.perf_counter()
        new_up = userpass_token(http, rucio)
        timed(http, whoami, new_up)
        first["userpass"].append(time.perf_counter() - start)
        first["oidc"].append(timed(http, whoami, token))

    print("\nper call, token already known to Rucio:")
    for name, values in steady.items():
        print(f"  {name:10s} {ms(values)}")
    floor = statistics.median(steady["no auth"])
    base = statistics.median(steady["userpass"]) - floor
    over = statistics.median(steady["oidc"]) - floor
    print(f"  whoami (token check + account row) over /ping: userpass {1000 * base:.2f} ms, oidc {1000 * over:.2f} ms"
          f" (oidc/userpass per call: {statistics.median(steady['oidc']) / statistics.median(steady['userpass']):.2f}x)")
    print("\nfirst call with a new token:")
    for name, values in first.items():
        print(f"  {name:10s} {ms(values)}")
    print(f"  oidc/userpass: {statistics.median(first['oidc']) / statistics.median(first['userpass']):.2f}x")


if __name__ == "__main__":
    main()
