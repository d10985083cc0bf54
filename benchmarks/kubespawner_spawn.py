"""Stock KubeSpawner vs Science Gateway's KubernetesSpawner on the same control plane: spawn time, API requests.

Run as root on a machine where ``scripts/services/kubernetes start`` has run, with the package
(extras ``kubernetes,test``) installed in a world-readable venv (configurable-http-proxy on PATH,
or where ``scripts/test`` puts it in that venv)::

    /var/tmp/venv-kube/bin/python benchmarks/kubespawner_spawn.py --servers 5 20 --spawns 10

Both variants are real JupyterHub processes (``jupyterhub_config.py`` plus a variant config,
through ``sgtest.hub.RunningHub``) with the same KubeSpawner, image, command, user, storage and
node, one after the other on the same API server, each in a fresh namespace of its own:

- **stock**: ``kubespawner.KubeSpawner`` with a plain one-entry ``profile_list`` (the cpu pool's node
  selector, the same cpu/memory limits and requests) and Zero to JupyterHub's default storage and
  user (a per-user PVC of the default class at /home/jovyan, uid 1000, gid 100) set as traits;
- **ours**: ``science-gateway-kubernetes`` with a ``ResourcePolicy`` allowing that partition (a node
  pool, ``KubernetesSpawner.node_pools``) and the same cores, memory and ``guarantee_ratio``; its
  storage and user are its own defaults (the same values).

Each hub talks to the API server with a kubeconfig of its own (``KUBECONFIG_BENCH_STOCK``,
``KUBECONFIG_BENCH_OURS``), so the API server's audit log (``KUBE_AUDIT_LOG``) tells their
requests apart by ``user.username``; one request is one ``auditID``, counted when the API server
received it. A watch is logged when it ends, so the windows are counted after the hub stopped.
Measured for each variant:

- **steady state**, one hub at a time: N servers started (``--servers``, 5 then 20; ``--parallel``
  requests at once), then every request of the hub for ``--window`` seconds, per minute, by verb
  and resource; then the servers are stopped and the hub with them;
- **spawn time**, both hubs up again at once with no server running, each user spawned and
  stopped on one hub, then the other, the order alternating (so both sides meet the same moments
  of a shared machine): ``--spawns`` users whose PVC exists (returning users), then
  ``--first-spawns`` users who never spawned (the PVC is created first); each from
  ``POST /hub/api/users/NAME/server`` to ``/user/NAME/api/status`` answering 200 through the proxy;
  with the requests the hub made from that POST until the server answered (**per spawn**) and from
  the DELETE until the hub said it stopped (**per stop**). The reflectors' list+watch renewals run
  on their own clock and fall into these windows too, so the spawn's own requests (all but
  ``list``/``watch``) are given next to all of them.

The pods run on the control plane's node agent (``scripts/services/kubernetes-node/agent.py``) as
local processes: the image name ``--image`` is registered in ``KUBE_IMAGES_FILE`` with the venv's
``bin``, and the server is that venv's ``jupyterhub-singleuser``. Results: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import requests
import yaml

import benchlib
from benchlib import add_run_arguments, bench_service, merge_config, proxy_on_path
from sgtest.hub import RunningHub, wait_for
from sgtest.services import parse_env

SERVICES_DIR = Path(os.environ.get("SG_SERVICES_DIR", "/var/tmp/science-gateway-services"))
KUBECONFIG_OF = {"stock": "KUBECONFIG_BENCH_STOCK", "ours": "KUBECONFIG_BENCH_OURS"}
#: the env key of the user each kubeconfig authenticates as (scripts/services/kubernetes makes them)
API_USER_OF = {"stock": "KUBE_BENCH_STOCK_USER", "ours": "KUBE_BENCH_OURS_USER"}
HOME = "/home/jovyan"
GIB = 1024**3
SPAWNER_CLASS = {"stock": "kubespawner.KubeSpawner", "ours": "science-gateway-kubernetes"}


def kube_env() -> dict[str, str]:
    path = SERVICES_DIR / "kubernetes.env"
    if not path.is_file():
        sys.exit(f"{path} does not exist: run scripts/services/kubernetes start first")
    return parse_env(path.read_text())


class Kube:
    """A small synchronous client of the API server with one kubeconfig's credentials."""

    def __init__(self, kubeconfig: str, workdir: Path):
        conf = yaml.safe_load(Path(kubeconfig).read_text())
        current = conf.get("current-context")
        context = next((c["context"] for c in conf.get("contexts", []) if c["name"] == current), None)
        cluster = next(c["cluster"] for c in conf["clusters"] if context is None or c["name"] == context["cluster"])
        user = next(u["user"] for u in conf["users"] if context is None or u["name"] == context["user"])
        self.url = cluster["server"].rstrip("/")
        self.http = requests.Session()
        self.http.trust_env = False  # REQUESTS_CA_BUNDLE would replace the cluster's CA

        def file_of(key):
            if user.get(key):
                return user[key]
            if user.get(f"{key}-data"):
                path = workdir / f"{secrets.token_hex(4)}-{key}.pem"
                path.write_bytes(base64.b64decode(user[f"{key}-data"]))
                path.chmod(0o600)
                return str(path)
            return None

        if cluster.get("certificate-authority"):
            self.http.verify = cluster["certificate-authority"]
        elif cluster.get("certificate-authority-data"):
            ca = workdir / f"{secrets.token_hex(4)}-ca.pem"
            ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
            self.http.verify = str(ca)
        cert, key = file_of("client-certificate"), file_of("client-key")
        if cert and key:
            self.http.cert = (cert, key)
        if user.get("token"):
            self.http.headers["Authorization"] = f"Bearer {user['token']}"

    def request(self, method, path, ok=(200, 201, 202), **kw) -> dict:
        r = self.http.request(method, self.url + path, timeout=30, **kw)
        if r.status_code not in ok:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:500]}")
        return r.json() if r.content else {}

    def exists(self, path) -> bool:
        return self.http.get(self.url + path, timeout=30).status_code == 200

    def make_namespace(self, name: str):
        """A namespace (the control plane's ClusterRole lets both bench users spawn into any)."""
        self.request("POST", "/api/v1/namespaces", json={"metadata": {"name": name, "labels": {"sg-bench": "1"}}})

    def delete_namespace(self, name: str, timeout: float = 120):
        self.request("DELETE", f"/api/v1/namespaces/{name}", ok=(200, 202, 404))
        try:
            wait_for(lambda: not self.exists(f"/api/v1/namespaces/{name}"), timeout, interval=1,
                     what=f"namespace {name} to go")
        except TimeoutError as e:
            print("warning:", e, flush=True)

    def pods(self, namespace: str) -> list[dict]:
        return self.request("GET", f"/api/v1/namespaces/{namespace}/pods")["items"]


def register_image(images_file: str, image: str, bin_dir: str) -> None:
    """Add ``image`` (without tag) -> ``bin_dir`` to the node agent's image map (read-modify-replace)."""
    path = Path(images_file)
    images = json.loads(path.read_text()) if path.is_file() and path.read_text().strip() else {}
    images[image.split(":")[0]] = {"path": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin"}
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(images, indent=2))
    tmp.chmod(0o644)
    tmp.replace(path)


class Audit:
    """The API server's audit log (JSON lines, one or more stages per request)."""

    def __init__(self, path: str):
        self.path = Path(path)

    def requests(self, username: str, start: float, end: float) -> list[dict]:
        """One event per request (``auditID``) of ``username`` received in [start, end] (epoch s)."""
        seen = {}
        for path in sorted(self.path.parent.glob(self.path.name + "*")):  # the log and its rotations
            if path.stat().st_mtime < start:
                continue
            with open(path, errors="replace") as f:
                for line in f:
                    if username not in line:
                        continue
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue
                    if event.get("user", {}).get("username") != username:
                        continue
                    received = parse_time(event.get("requestReceivedTimestamp") or event.get("stageTimestamp"))
                    if start <= received <= end:
                        seen.setdefault(event["auditID"], {**event, "_received": received})
        return sorted(seen.values(), key=lambda e: e["_received"])


def parse_time(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def kind_of(event: dict) -> str:
    """``verb resource`` (``watch pods``, ``create pods``, ``list events``...)."""
    ref = event.get("objectRef") or {}
    resource = ref.get("resource") or event.get("requestURI", "?").split("?")[0]
    if ref.get("subresource"):
        resource += "/" + ref["subresource"]
    return f"{event.get('verb', '?')} {resource}"


def own(events: list[dict]) -> list[dict]:
    """The requests a spawn or stop makes itself: all but the reflectors' list/watch."""
    return [e for e in events if e.get("verb") not in ("list", "watch")]


def tally(events: list[dict]) -> dict[str, int]:
    return dict(sorted(collections.Counter(kind_of(e) for e in events).items()))


def variant_config(variant, args, users, token, namespace) -> dict:
    """The hub config of one variant: dummy logins for ``users`` (group ``bench``), the benchmark's
    service token, and :func:`spawner_config`."""
    hub = {
        "JupyterHub": {
            "authenticator_class": "dummy",
            "cleanup_servers": True,
            "load_groups": {"bench": {"users": users}},
            **bench_service(token),
        },
        "Authenticator": {"allowed_users": users},
    }
    return merge_config(hub, spawner_config(variant, args, namespace, group="bench"))


def spawner_config(variant, args, namespace, group) -> dict:
    """The spawner sections of one variant (``group``: the hub group ours' policy admits). Both get
    what a Zero to JupyterHub hub gets by default for storage and the user (a per-user PVC of the
    default class mounted at /home/jovyan, uid 1000, gid 100): stock through KubeSpawner's traits,
    ours from its own defaults (the same values)."""
    cores, memory_gb, ratio = args.cores, args.memory_gb, args.guarantee_ratio
    pool = {"science-gateway.io/pool": "cpu"}
    config = {
        "JupyterHub": {"spawner_class": SPAWNER_CLASS[variant]},
        "Spawner": {"http_timeout": 300, "start_timeout": 600},
        "KubeSpawner": {
            "namespace": namespace,
            "image": args.image,
            "image_pull_policy": "IfNotPresent",
            "cmd": ["jupyterhub-singleuser"],
            "k8s_api_request_timeout": 30,
        },
    }
    if variant == "stock":
        config["KubeSpawner"].update({
            "uid": 1000, "gid": 100, "fs_gid": 100,
            "storage_pvc_ensure": True, "storage_capacity": "10Gi",
            "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": "{pvc_name}"}}],
            "volume_mounts": [{"name": "home", "mountPath": HOME}],
            "working_dir": HOME,
            "environment": {"HOME": HOME, "USER": "jovyan"},  # the jupyter/docker-stacks images' ENV
            "profile_list": [{
                "display_name": f"cpu: {cores} core(s), {memory_gb} GiB",
                "slug": "cpu",
                "default": True,
                "kubespawner_override": {
                    # the same values ours derives from the request (spawners/kube_pod.py)
                    "cpu_limit": float(cores), "cpu_guarantee": round(cores * ratio, 3),
                    "mem_limit": memory_gb * GIB, "mem_guarantee": int(memory_gb * GIB * ratio),
                    "node_selector": pool,
                },
            }],
        })
    else:
        config["ResourcePolicy"] = {
            "groups": {group: {"partitions": {"cpu": {
                "max_cores": cores, "max_memory_gb": memory_gb, "default_cores": cores,
                "default_memory_gb": memory_gb, "max_walltime_hours": 8}}}}
        }
        config["KubernetesSpawner"] = {"node_pools": {"cpu": {"node_selector": pool}}, "guarantee_ratio": ratio}
        config["KubernetesSpawner"].update(args.ours_config)
    return config


def spawn_body(variant, args) -> dict:
    if variant == "stock":
        return {"profile": "cpu"}
    return {"partition": "cpu", "cores": args.cores, "memory_gb": args.memory_gb, "walltime_hours": 1}


class Bench(benchlib.Bench):
    """benchlib's Bench; spawn and stop give the epochs the audit-log windows need."""

    def spawn(self, name, timeout=600) -> tuple[float, float]:
        """Start ``name``'s server; (epoch at the request, seconds until it answered)."""
        start, t0 = time.time(), time.monotonic()
        r = self.api("POST", f"/users/{name}/server", json=self.body)
        if r.status_code not in (201, 202):
            raise RuntimeError(f"spawn {name}: {r.status_code} {r.text}")

        def ready():
            if self.answers(name):
                return True
            user = self.api("GET", f"/users/{name}").json()
            if not user["servers"] and not user.get("pending"):
                raise RuntimeError(f"{name}'s server failed to start:\n{self.hub.log_tail(30)}")
            return False

        wait_for(ready, timeout, interval=0.1, what=f"{name}'s server")
        return start, time.monotonic() - t0

    def stop(self, name) -> float:
        super().stop(name)
        return time.time()


def pod_sample(pod: dict) -> dict:
    """What both variants' pods should share: resources, placement, user, volumes, command."""
    spec, container = pod["spec"], pod["spec"]["containers"][0]
    return {
        "resources": container.get("resources"),
        "nodeSelector": spec.get("nodeSelector"),
        "tolerations": [t for t in spec.get("tolerations") or [] if not t.get("key", "").startswith("node.kubernetes.io/")],
        "runAsUser": (container.get("securityContext") or {}).get("runAsUser",
                                                               (spec.get("securityContext") or {}).get("runAsUser")),
        "fsGroup": (spec.get("securityContext") or {}).get("fsGroup"),
        "volumeMounts": [m["mountPath"] for m in container.get("volumeMounts") or []],
        "command": container.get("command") or container.get("args"),
        "nodeName": spec.get("nodeName"),
    }


def spawn_and_stop(bench: Bench, name: str) -> dict:
    """Spawn ``name``'s server, then stop it; the epochs of both (the audit windows)."""
    start, seconds = bench.spawn(name)
    stopping = time.time()
    stopped = bench.stop(name)
    return {"user": name, "seconds": seconds, "start": start, "ready": start + seconds,
            "stop_start": stopping, "stopped": stopped}


def count_spawns(spawns: list[dict], audit: Audit, username: str) -> list[dict]:
    """Add each spawn's and stop's requests (from the audit log) to its record."""
    for spawn in spawns:
        spawn_events = audit.requests(username, spawn["start"], spawn["ready"])
        stop_events = audit.requests(username, spawn["stop_start"], spawn["stopped"])
        spawn.update(spawn_requests=len(spawn_events), spawn_own=tally(own(spawn_events)),
                     spawn_all=tally(spawn_events), stop_requests=len(stop_events), stop_own=tally(own(stop_events)))
    return spawns


def summarize_spawns(spawns: list[dict]) -> dict:
    median = statistics.median

    def kinds(key):
        total = collections.Counter()
        for s in spawns:
            total.update(s[key])
        return dict(sorted(total.items()))

    return {
        "seconds": [s["seconds"] for s in spawns],
        "median": median(s["seconds"] for s in spawns),
        "requests_median": median(s["spawn_requests"] for s in spawns),
        "own_median": median(sum(s["spawn_own"].values()) for s in spawns),
        "own_max": max(sum(s["spawn_own"].values()) for s in spawns),
        "stop_own_median": median(sum(s["stop_own"].values()) for s in spawns),
        "own_kinds": kinds("spawn_own"),
        "stop_own_kinds": kinds("stop_own"),
        "count": len(spawns),
    }


class Variant:
    """One side of the comparison: its namespace, API user, hub config and hub state dir."""

    def __init__(self, name: str, args, env: dict, users: list[str], workdir: Path):
        self.name = name
        self.kubeconfig = env[KUBECONFIG_OF[name]]
        self.username = env[API_USER_OF[name]]
        self.namespace = f"sgbench-{name}-{secrets.token_hex(3)}"
        self.token = secrets.token_hex(16)
        self.config = variant_config(name, args, users, self.token, self.namespace)
        self.body = spawn_body(name, args)
        self.state_dir = workdir / f"hub-{name}"
        self.result = {"namespace": self.namespace, "api_user": self.username, "load": {}}

    def hub(self) -> RunningHub:
        """The variant's hub (the same state dir each time: a restart keeps users and PVC names)."""
        return RunningHub(self.state_dir, config=self.config, env={"KUBECONFIG": self.kubeconfig})


def steady_state(v: Variant, args, admin: Kube, users: list[str], audit: Audit) -> None:
    """Start servers up to each of ``--servers``, count the hub's requests for ``--window`` s."""
    windows = {}
    with v.hub() as hub:
        bench = Bench(hub, v.token, v.body)
        running = 0
        for target in sorted(args.servers):
            batch = users[running:target]
            with ThreadPoolExecutor(args.parallel) as pool:
                times = [t for _, t in pool.map(bench.spawn, batch)]
            running = target
            print(f"{v.name}: {target} servers up (batch of {len(batch)}: "
                  f"median {statistics.median(times):.2f} s, max {max(times):.2f} s)", flush=True)
            time.sleep(args.settle)
            start = time.time()
            time.sleep(args.window)
            windows[target] = (start, time.time())
            pods = admin.pods(v.namespace)
            v.result.setdefault("pod_sample", pod_sample(pods[0]) if pods else {})
            v.result["load"][target] = {
                "fill_spawn_seconds": times,
                "pods_running": sum(1 for p in pods if p["status"].get("phase") == "Running"),
            }
        with ThreadPoolExecutor(args.parallel) as pool:
            list(pool.map(bench.stop, users[:running]))
    # The API server logs a watch when it ends: read the log once the hub (and its watches) stopped.
    time.sleep(3)
    for target, (start, end) in windows.items():
        events = audit.requests(v.username, start, end)
        if not events:
            raise RuntimeError(f"no requests of {v.username} in {audit.path} for {args.window} s: "
                               f"is it the user of {v.kubeconfig}?")
        load = v.result["load"][target]
        load.update(
            requests_per_min=len(events) * 60 / (end - start),
            by_kind_per_min={k: n * 60 / (end - start) for k, n in tally(events).items()},
        )
        print(f"{v.name} @{target} servers ({load['pods_running']} pods running): "
              f"{load['requests_per_min']:.1f} requests/min", flush=True)


def paired_spawns(variants: list[Variant], args, phases: dict[str, list[str]], audit: Audit) -> None:
    """All hubs up at once (no servers running), each user spawned and stopped on each hub in
    turn, the order alternating, so both sides see the same moments of a shared machine."""
    with contextlib.ExitStack() as stack:
        benches = {v.name: Bench(stack.enter_context(v.hub()), v.token, v.body) for v in variants}
        spawns = {v.name: {phase: [] for phase in phases} for v in variants}
        turn = 0
        for phase, names in phases.items():
            for name in names:
                order = variants if turn % 2 == 0 else variants[::-1]
                for v in order:
                    spawns[v.name][phase].append(spawn_and_stop(benches[v.name], name))
                    time.sleep(args.pause)
                turn += 1
            print(f"{phase} spawns (s): " + "; ".join(
                f"{v.name} {[round(s['seconds'], 2) for s in spawns[v.name][phase]]}" for v in variants), flush=True)
    time.sleep(3)
    for v in variants:
        v.result["spawns"] = {}
        for phase, records in spawns[v.name].items():
            v.result["spawns"][phase] = count_spawns(records, audit, v.username)
            if records:
                v.result[phase] = summarize_spawns(records)


def add_pod_arguments(parser, servers: int) -> None:
    """The pod settings both variants share (``--guarantee-ratio``'s default fits ``servers``
    servers on the 4-core, 8 GiB test node)."""
    ratio = round(2.0 / servers, 3)
    parser.add_argument("--cores", type=int, default=1, help="cores (limit) per server")
    parser.add_argument("--memory-gb", type=int, default=1, help="memory (GiB, limit) per server")
    parser.add_argument("--guarantee-ratio", type=float, default=ratio,
                        help="requests as a share of the limits, both variants (ours: KubernetesSpawner.guarantee_ratio); "
                             f"{ratio} fits {servers} servers of 1 core and 1 GiB on the 4-core, 8 GiB test node")
    parser.add_argument("--ours-config", type=json.loads, default={},
                        help="extra KubernetesSpawner traits for ours (JSON)")
    parser.add_argument("--image", default="sgbench/singleuser:bench", help="image name registered for the venv")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, nargs="+", default=[5, 20], help="running-server counts to measure")
    parser.add_argument("--window", type=float, default=60, help="seconds to count requests at each count")
    parser.add_argument("--settle", type=float, default=15, help="seconds to wait after spawns before counting")
    parser.add_argument("--spawns", type=int, default=10, help="sequential spawns for the spawn-time median")
    parser.add_argument("--first-spawns", type=int, default=5,
                        help="then sequential spawns of users who never spawned (their PVC is made first)")
    parser.add_argument("--pause", type=float, default=3, help="seconds between sequential spawns")
    parser.add_argument("--parallel", type=int, default=5, help="spawns requested at once when filling up")
    parser.add_argument("--variants", nargs="+", default=["stock", "ours"], choices=["stock", "ours"])
    add_pod_arguments(parser, servers=20)
    add_run_arguments(parser, keep="the hubs' state dirs, logs and namespaces")
    args = parser.parse_args(argv)
    if args.report:
        results = json.loads(Path(args.report).read_text())
        args.servers = results["args"]["servers"]
        return report(results, args)

    env = kube_env()
    proxy_on_path(args.prefix)
    register_image(env["KUBE_IMAGES_FILE"], args.image, f"{args.prefix}/bin")
    # the servers of the steady state, then spawned again one by one (their PVCs exist: a returning
    # user); then --first-spawns users who never spawned (KubeSpawner creates their PVC first)
    count = max(max(args.servers), args.spawns)
    users = [f"sgbench{i:02d}" for i in range(1, count + 1)]
    fresh = [f"sgbench{i:02d}" for i in range(count + 1, count + 1 + args.first_spawns)]
    results = {"args": vars(args), "variants": {}}
    workdir = Path(tempfile.mkdtemp(prefix="sgbench-kube-", dir="/var/tmp"))
    os.chmod(workdir, 0o755)
    print("hub state and logs in", workdir, flush=True)
    audit = Audit(env["KUBE_AUDIT_LOG"])
    admin = Kube(env["KUBECONFIG_ADMIN"], workdir)
    variants = [Variant(name, args, env, users + fresh, workdir) for name in args.variants]
    try:
        for v in variants:
            admin.make_namespace(v.namespace)
            print(f"{v.name}: namespace {v.namespace}, API user {v.username}", flush=True)
            results["variants"][v.name] = v.result
        for v in variants:  # one after the other: 20 servers of one hub at a time
            steady_state(v, args, admin, users, audit)
            save(results, args)
        paired_spawns(variants, args, {"returning": [users[i % len(users)] for i in range(args.spawns)],
                                       "first": fresh}, audit)
        save(results, args)
    finally:
        if not args.keep:
            for v in variants:
                admin.delete_namespace(v.namespace)
            shutil.rmtree(workdir, ignore_errors=True)
    report(results, args)


def save(results, args):
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def report(results, args):
    counts = sorted(args.servers)
    for res in results["variants"].values():  # from a saved JSON file: its keys are strings
        res["load"] = {int(n): load for n, load in res["load"].items()}
    phases = [p for p in ("returning", "first") if all(p in r for r in results["variants"].values())]
    print("\n| variant | " + " | ".join(f"requests/min @{n} servers" for n in counts)
          + "".join(f" | {p} spawn: median s | {p} spawn: own requests (all)" for p in phases) + " | stop: own requests |")
    print("|---|" + "---|" * (len(counts) + 2 * len(phases) + 1))
    for variant, res in results["variants"].items():
        row = [variant] + [f"{res['load'][n]['requests_per_min']:.1f}" for n in counts]
        for p in phases:
            row += [f"{res[p]['median']:.2f}", f"{res[p]['own_median']:g} ({res[p]['requests_median']:g})"]
        row.append(f"{res['returning']['stop_own_median']:g}")
        print("| " + " | ".join(row) + " |")
    variants = results["variants"]
    if "stock" in variants and "ours" in variants:
        s, o = variants["stock"], variants["ours"]
        for p in phases:
            pairs = [b["seconds"] / a["seconds"] for a, b in zip(s["spawns"][p], o["spawns"][p])]
            print(f"ours / stock, {p} spawns: median time {o[p]['median'] / s[p]['median']:.2f} "
                  f"(median of the {len(pairs)} same-user pairs {statistics.median(pairs):.2f}), "
                  f"own requests {o[p]['own_median']:g} vs {s[p]['own_median']:g} (max {o[p]['own_max']} vs {s[p]['own_max']})")
    for variant, res in variants.items():
        print(f"{variant} pod: {json.dumps(res.get('pod_sample'))}")
    for variant, res in variants.items():
        for n in counts:
            kinds = ", ".join(f"{k} {v:.1f}" for k, v in res["load"][n]["by_kind_per_min"].items())
            print(f"{variant} @{n}/min: {kinds}")
        for p in phases:
            print(f"{variant} {p} spawns, own requests (all spawns): {res[p]['own_kinds']}; stops: {res[p]['stop_own_kinds']}")


if __name__ == "__main__":
    main()
