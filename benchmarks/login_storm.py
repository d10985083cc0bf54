"""Login storm: N users log in through the real OIDC provider and spawn at once, ours vs stock.

Run as root on a machine where ``scripts/services/slurm start`` and ``scripts/services/oidc
install`` have run (the npm install is reused), with the package (extras ``oauth,slurm,test``)
installed in a world-readable venv::

    /var/tmp/sg-venv/bin/python benchmarks/login_storm.py --users 50 --repeats 2
    /var/tmp/sg-venv/bin/python benchmarks/login_storm.py --backend kubernetes --users 50

``--backend kubernetes`` runs the servers on the Kubernetes control plane
(``scripts/services/kubernetes start``) with ``kubespawner_spawn.py``'s stock KubeSpawner and ours
instead, each storm in a fresh namespace.

Both variants are real JupyterHub processes on the same services, one after the other (the order
alternating between repeats), with the same server in every job:

- **stock**: JupyterHub + oauthenticator's ``GenericOAuthenticator`` (endpoints, client and
  ``allowed_groups`` set as traits, groups from the entitlement claim, ``auth_state`` on) +
  batchspawner's ``SlurmSpawner``;
- **ours**: the gateway's ``science-gateway-checkin`` authenticator (the documented
  ``docs/examples/checkin.yaml``, OIDC discovery, entitlements to groups) + ``science-gateway-slurm``
  + a ``ResourcePolicy`` that lets the VO's group use the partition.

The Slurm spawner settings are ``benchlib.slurm_spawner_config`` (the same as ``slurm_poll.py``):
1 core, 1 GiB, 1 h on partition ``cpu``. The identity provider is a second instance of the test provider
(``scripts/services/oidc-provider/server.mjs``, through ``sgtest.oidc.ProviderInstance``) on
``--provider-port``, with generated users ``sgbench01``... (``OIDC_GENERATED_USERS``), all members
of the VO; the shared provider is not touched. The hub usernames come from ``preferred_username``
on both sides, so each is its unix account (created when missing).

Each user is one thread with a cookie jar of its own, released at once: ``/hub/oauth_login``, the
provider's login and consent pages (``sgtest.oidc.hub_login``: what a browser does, without one),
the callback; then ``POST /hub/api/users/NAME/server`` with the session's cookie and XSRF token,
the spawn's progress event stream until ``ready`` (what the spawn-pending page does), then
``/user/NAME/api/status`` through the proxy after the single-user server's own OAuth with the hub
(as the user; a 200 there, and ``/api/me`` naming NAME, is a reachable server). An error is any user
who does not get there within ``--timeout``. Reported: errors, total time (first request to last
server reachable), p50/p95 per user of login, spawn and the whole, the query commands Slurm saw,
and the machine's load average.

The server in every job is ``jupyterhub-singleuser`` with all server extensions off (no
JupyterLab, no gateway extension: ``--light``, the default): the same light server for both, so
50 of them fit on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import requests
from benchlib import (
    USER_PREFIX,
    Bench,
    add_run_arguments,
    bench_service,
    bench_users,
    ensure_users,
    load_average,
    make_wrappers,
    merge_config,
    proxy_on_path,
    slurm_jobs_of,
    slurm_spawner_config,
)
from sgtest import oidc
from sgtest.commands import count_calls
from sgtest.hub import HubSession, RunningHub, wait_for

import kubespawner_spawn

#: the group ours' policy allows, and the entitlement stock's allowed_groups names (the generated
#: users' membership in scripts/services/oidc-provider/server.mjs)
VO = "vo.astro.example"
#: server extensions a light server turns off (whatever of them is installed)
EXTENSIONS_OFF = ("jupyterlab", "science_gateway.jupyter_ext", "jupyter_lsp", "jupyter_server_terminals",
                  "notebook_shim", "jupyter_server_proxy", "nbclassic", "notebook")
#: a page that needs a login on the light server (the first visit walks its OAuth with the hub)
LOGIN_PAGE = "files/.sgbench-login"


def light_server_args() -> list[str]:
    return [arg for name in EXTENSIONS_OFF for arg in ("--ServerApp.jpserver_extensions", f"{name}=False")]


def auth_config(variant: str, provider: oidc.ProviderInstance, hub_url: str) -> tuple[dict, dict]:
    """(config sections, hub environment) of the variant's authenticator against ``provider``."""
    env = provider.env
    client_id, client_secret = oidc.client(env, "checkin")
    callback = f"{hub_url}/hub/oauth_callback"
    scope = ["openid", "profile", "email", "eduperson_entitlement", "voperson_id", "offline_access"]
    if variant == "stock":
        discovery = requests.get(env["OIDC_DISCOVERY_URL"], timeout=10).json()
        member = f"urn:mace:egi.eu:group:{VO}:role=member#{env['OIDC_CHECKIN_AUTHORITY']}"
        return {
            "JupyterHub": {"authenticator_class": "generic-oauth"},
            "GenericOAuthenticator": {
                "client_id": client_id,
                "client_secret": client_secret,
                "oauth_callback_url": callback,
                "authorize_url": discovery["authorization_endpoint"],
                "token_url": discovery["token_endpoint"],
                "userdata_url": discovery["userinfo_endpoint"],
                "scope": scope,
                "username_claim": "preferred_username",
                "manage_groups": True,
                "auth_state_groups_key": "oauth_user.eduperson_entitlement",
                "allowed_groups": [member],
                "enable_auth_state": True,
                "login_service": "EGI Check-in",
            },
        }, {}
    example = oidc.load_example("checkin")
    auth = example["CheckinAuthenticator"]
    auth.update(oidc_issuer=env["OIDC_ISSUER"], oauth_callback_url=callback, username_claim="preferred_username",
                entitlement_authorities=[env["OIDC_CHECKIN_AUTHORITY"]], allowed_groups=[VO])
    return example, oidc.hub_env("checkin", env)


class SlurmBackend:
    """The real Slurm (scripts/services/slurm): benchlib's stock and ours Slurm spawners."""

    name = "slurm"

    def __init__(self, args, users, workdir: Path):
        self.args, self.users, self.workdir = args, users, workdir
        ensure_users(users)
        self.log: Path | None = None

    def spawner_config(self, variant: str, tag: str) -> tuple[dict, dict]:
        wrappers = self.workdir / f"wrap-{tag}"
        self.log = make_wrappers(wrappers)
        return slurm_spawner_config(variant, wrappers, self.args.prefix, self.args.poll_interval, group=VO,
                                    nice=self.args.nice), {}

    def spawn_body(self, variant: str) -> dict:
        return {}

    def counts(self) -> dict:
        return {"squeue_calls": count_calls(self.log)["squeue"]}

    def settle(self):
        wait_for(lambda: not slurm_jobs_of(self.users), 180, interval=1, what="the storm's jobs to leave Slurm")

    def close(self):
        pass


class KubernetesBackend:
    """The Kubernetes control plane (scripts/services/kubernetes): kubespawner_spawn's stock
    KubeSpawner and ours, each storm in a namespace of its own."""

    name = "kubernetes"

    def __init__(self, args, users, workdir: Path):
        self.args, self.users, self.workdir = args, users, workdir
        self.env = kubespawner_spawn.kube_env()
        kubespawner_spawn.register_image(self.env["KUBE_IMAGES_FILE"], args.image, f"{args.prefix}/bin")
        self.admin = kubespawner_spawn.Kube(self.env["KUBECONFIG_ADMIN"], workdir)
        self.namespaces: list[str] = []

    def spawner_config(self, variant: str, tag: str) -> tuple[dict, dict]:
        namespace = f"sgstorm-{variant}-{secrets.token_hex(3)}"
        self.admin.make_namespace(namespace)
        self.namespaces.append(namespace)
        config = kubespawner_spawn.spawner_config(variant, self.args, namespace, group=VO)
        return config, {"KUBECONFIG": self.env[kubespawner_spawn.KUBECONFIG_OF[variant]]}

    def spawn_body(self, variant: str) -> dict:
        return kubespawner_spawn.spawn_body(variant, self.args)

    def counts(self) -> dict:
        return {}

    def settle(self):
        if not self.args.keep:
            while self.namespaces:
                self.admin.delete_namespace(self.namespaces.pop())

    def close(self):
        self.settle()


BACKENDS = {"slurm": SlurmBackend, "kubernetes": KubernetesBackend}


def variant_config(variant, args, provider, hub_url, backend, tag, token) -> tuple[dict, dict]:
    """(config, environment) of one variant's hub: its authenticator, the backend's spawner, the
    benchmark's service token, the light server."""
    auth, env = auth_config(variant, provider, hub_url)
    spawner, spawner_env = backend.spawner_config(variant, tag)
    service = bench_service(token)
    roles = [*auth.get("JupyterHub", {}).get("load_roles", []), *service.pop("load_roles")]
    hub = {"JupyterHub": {"cleanup_servers": True, **service, "load_roles": roles}}
    config = merge_config(auth, spawner, hub)
    if args.light:
        config.setdefault("Spawner", {})["args"] = light_server_args()
    return config, {**env, **spawner_env}


class Storm:
    """One variant's hub and its N users, each in a thread of its own, released at once."""

    def __init__(self, hub: RunningHub, provider: oidc.ProviderInstance, users: list[str], timeout: float,
                 body: dict):
        self.hub, self.provider, self.users, self.timeout, self.body = hub, provider, users, timeout, body
        self.barrier = threading.Barrier(len(users) + 1)
        self.start = 0.0

    def user(self, name: str) -> dict:
        """Log in, spawn, wait until the server answers as ``name``; times in s from the release."""
        session = HubSession(self.hub)
        record = {"user": name}
        self.barrier.wait()
        t0 = time.monotonic()
        try:
            oidc.hub_login(session.http, self.hub.url, self.provider.issuer, name,
                           oidc.password(self.provider.env, name), timeout=120)
            session.get("/hub/home").raise_for_status()  # a hub page after login: its XSRF cookie
            record["login"] = time.monotonic() - t0
            r = session.api(f"/users/{name}/server", method="POST", json=self.body, timeout=120)
            if r.status_code not in (201, 202):
                raise RuntimeError(f"spawn request: {r.status_code} {r.text[:200]}")
            self.wait_ready(session, name, t0 + self.timeout)
            record["spawn"] = time.monotonic() - t0 - record["login"]
            wait_for(lambda: session.server_status(name, page=LOGIN_PAGE) is not None,
                     max(1.0, t0 + self.timeout - time.monotonic()), interval=0.5, what=f"{name}'s /api/status")
            who = session.identity(name)
            if who != name:
                raise RuntimeError(f"/user/{name}/api/me answered as {who!r}")
            record["total"] = time.monotonic() - t0
            record["done_at"] = time.monotonic() - self.start
        except Exception as e:  # noqa: BLE001 - every failure is one error of the storm, with its reason
            record["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            record["failed_after"] = time.monotonic() - t0
        return record

    def wait_ready(self, session: HubSession, name: str, deadline: float) -> None:
        """Read the spawn's progress events (as the spawn-pending page does) until ready or failed."""
        url = f"{self.hub.url}/hub/api/users/{name}/server/progress"
        with session.http.get(url, headers=session.xsrf_headers(), stream=True,
                              timeout=(30, max(1.0, deadline - time.monotonic()))) as r:
            if r.status_code != 200:
                raise RuntimeError(f"progress: {r.status_code} {r.text[:200]}")
            for line in r.iter_lines(decode_unicode=True):
                if not line or not line.startswith("data:"):
                    continue
                event = json.loads(line[5:])
                if event.get("failed"):
                    raise RuntimeError(f"spawn failed: {str(event.get('message'))[:300]}")
                if event.get("ready"):
                    return
                if time.monotonic() > deadline:
                    break
        raise TimeoutError(f"no ready event for {name}")

    def run(self) -> list[dict]:
        with ThreadPoolExecutor(len(self.users)) as pool:
            futures = [pool.submit(self.user, name) for name in self.users]
            self.barrier.wait()
            self.start = time.monotonic()
            return [f.result() for f in futures]


class LoadSampler(threading.Thread):
    """The 1-minute load average every ``interval`` seconds while a storm runs."""

    def __init__(self, interval: float = 5):
        super().__init__(daemon=True)
        self.interval, self.samples, self.halt = interval, [], threading.Event()

    def run(self):
        while not self.halt.is_set():
            self.samples.append(load_average()[0])
            self.halt.wait(self.interval)

    def stop(self) -> list[float]:
        self.halt.set()
        self.join()
        return self.samples


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) by linear interpolation between the closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(records: list[dict]) -> dict:
    ok = [r for r in records if "error" not in r]
    summary = {"users": len(records), "errors": len(records) - len(ok),
               "error_samples": sorted({r["error"] for r in records if "error" in r})[:5]}
    if ok:
        summary["total_seconds"] = max(r["done_at"] for r in ok)
        for key in ("login", "spawn", "total"):
            values = [r[key] for r in ok]
            summary[key] = {"p50": percentile(values, 0.5), "p95": percentile(values, 0.95), "max": max(values)}
    return summary


def run_storm(variant: str, repeat: int, args, provider, users, backend, workdir: Path) -> dict:
    tag = f"{variant}-{repeat}"
    token = secrets.token_hex(16)
    hub = RunningHub(workdir / f"hub-{tag}", stock=variant == "stock")
    hub.extra_config, hub.extra_env = variant_config(variant, args, provider, hub.url, backend, tag, token)
    result = {"variant": variant, "repeat": repeat}
    with hub:
        admin = Bench(hub, token)
        before_load = load_average()
        sampler = LoadSampler()
        sampler.start()
        started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        records = Storm(hub, provider, users, args.timeout, backend.spawn_body(variant)).run()
        samples = sampler.stop()
        result.update(summarize(records), records=records, started_at=started_at, load_before=before_load,
                      load_after=load_average(), load_max=max(samples, default=0.0), **backend.counts())
        print(f"{variant} #{repeat}: {json.dumps({k: v for k, v in result.items() if k != 'records'})}", flush=True)
        stop_all(admin, users)
    backend.settle()
    return result


def stop_all(admin: Bench, users: list[str]) -> None:
    def stop(name):
        if admin.api("GET", f"/users/{name}").status_code == 200:
            admin.stop(name)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(stop, users))


def report(results: dict) -> None:
    print("\n| variant | run | errors | total (s) | per user p50 / p95 (s) | login p50 / p95 | spawn p50 / p95 "
          "| squeue calls | load avg (before, max) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for variant, runs in results["variants"].items():
        for r in runs:
            if "total" not in r:
                print(f"| {variant} | {r['repeat']} | {r['errors']} | - | - | - | - | {r.get('squeue_calls', '-')} | |")
                continue
            print(f"| {variant} | {r['repeat']} | {r['errors']} | {r['total_seconds']:.1f} "
                  f"| {r['total']['p50']:.1f} / {r['total']['p95']:.1f} | {r['login']['p50']:.1f} / {r['login']['p95']:.1f} "
                  f"| {r['spawn']['p50']:.1f} / {r['spawn']['p95']:.1f} | {r.get('squeue_calls', '-')} "
                  f"| {r['load_before'][0]:.1f}, {r['load_max']:.1f} |")
    runs = results["variants"]
    if runs.get("stock") and runs.get("ours"):
        pairs = [o["total_seconds"] / s["total_seconds"] for s, o in zip(runs["stock"], runs["ours"])
                 if "total_seconds" in s and "total_seconds" in o]
        if pairs:
            print(f"\nours / stock, total time: {', '.join(f'{p:.2f}' for p in pairs)} "
                  f"(median {statistics.median(pairs):.2f}); errors: ours {sum(r['errors'] for r in runs['ours'])}, "
                  f"stock {sum(r['errors'] for r in runs['stock'])}")
        for variant in ("stock", "ours"):
            for r in runs[variant]:
                for sample in r["error_samples"]:
                    print(f"{variant} #{r['repeat']} error: {sample}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=sorted(BACKENDS), default="slurm",
                        help="where the servers run: the real Slurm, or the Kubernetes control plane")
    parser.add_argument("--users", type=int, default=50, help="users logging in and spawning at once")
    parser.add_argument("--repeats", type=int, default=1, help="storms per variant (the order alternates)")
    parser.add_argument("--variants", nargs="+", default=["stock", "ours"], choices=["stock", "ours"])
    parser.add_argument("--timeout", type=float, default=900, help="seconds a user may take to reach their server")
    parser.add_argument("--poll-interval", type=float, default=30, help="Spawner.poll_interval of both variants")
    parser.add_argument("--provider-port", type=int, default=21500, help="port of the benchmark's own OIDC provider")
    parser.add_argument("--pause", type=float, default=20, help="seconds between storms (the node settles)")
    parser.add_argument("--nice", type=int, default=0,
                        help="slurm: run the servers at this niceness on both sides (10: the hub and the provider "
                             "are not starved by 50 starting servers on one machine, as on a cluster whose servers "
                             "run on compute nodes)")
    parser.add_argument("--full-server", dest="light", action="store_false",
                        help="run the server with its extensions (JupyterLab, the gateway's) instead of the light one")
    kubespawner_spawn.add_pod_arguments(parser.add_argument_group("kubernetes"), servers=50)
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    if args.report:
        return report(json.loads(Path(args.report).read_text()))

    proxy_on_path(args.prefix)
    users = bench_users(args.users)
    results = {"args": vars(args), "machine": {"cpus": os.cpu_count()}, "variants": {v: [] for v in args.variants}}
    workdir = Path(tempfile.mkdtemp(prefix="sgbench-storm-", dir="/var/tmp"))
    os.chmod(workdir, 0o755)
    print("hub state and logs in", workdir, flush=True)
    backend = BACKENDS[args.backend](args, users, workdir)
    provider = oidc.ProviderInstance(args.provider_port, env={"OIDC_GENERATED_USERS": f"{USER_PREFIX}:{args.users}"})
    try:
        with provider:
            for repeat in range(args.repeats):
                order = args.variants if repeat % 2 == 0 else args.variants[::-1]
                for variant in order:
                    results["variants"][variant].append(
                        run_storm(variant, repeat, args, provider, users, backend, workdir))
                    if args.json:
                        Path(args.json).write_text(json.dumps(results, indent=2))
                    time.sleep(args.pause)
    finally:
        backend.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report(results)


if __name__ == "__main__":
    main()
