"""A hub with 1,000 and 10,000 users in its database and 500 running Slurm servers: start-up and load.

Run as root or any user, on a machine without Slurm (it is simulated), with the package installed
(extras ``slurm,oauth,test``) and configurable-http-proxy on PATH::

    /var/tmp/sg-venv/bin/python benchmarks/scale.py --users 1000 10000 --running 500 --json /var/tmp/scale.json

For each user count N, one after the other:

1. **The database** (``jupyterhub.sqlite``, written with JupyterHub's ORM in bulk): N users in
   VO groups (1-3 of 20 each), with the ``user`` role, encrypted ``auth_state`` as the gateway's
   Check-in authenticator stores it (its own ``build_auth_state_dict`` on a token response and
   userinfo of realistic size, ``JUPYTERHUB_CRYPT_KEY`` set), and ``--running`` of them with a
   running ``science-gateway-slurm`` server: a server record, the spawner's state (job id, port,
   unix account), the server's API token and OAuth client, as a spawn leaves them.
2. **Simulated nodes and identity provider**, in this process: one tornado server listening on
   one loopback address per running server (``127.216.X.Y:--node-port``), answering every
   request 200 as a Jupyter server would (the hub checks each running server at start-up:
   ``init_spawners`` polls it, then GETs ``{server url}api`` and stops servers that do not
   answer within ``Spawner.http_timeout``); and a stand-in OIDC provider (token and userinfo
   endpoints) that counts calls, so token refreshes follow the real oauthenticator path.
3. **The real hub**: ``jupyterhub -f jupyterhub_config.py`` (``sgtest.hub.RunningHub``) with the
   documented Check-in site config (``docs/examples/checkin.yaml``) pointed at the stand-in
   provider, the gateway's Slurm spawner and its shared poller with production intervals, whose
   ``SlurmQueuePoller.squeue`` is a stand-in command (``sgtest.commands.FakeCommand``) that
   answers RUNNING for the 500 jobs and logs each call.
4. **Measured**: seconds from process start to the first 200 of ``/hub/api/`` and of
   ``/hub/home`` for a logged-in user (a signed login cookie, as after an OIDC login), with
   JupyterHub's own ``Initialized N spawners in S seconds``; ``squeue`` calls in the first minute;
   the hub's CPU seconds and RSS at the first answer and after the minute; servers reachable
   through the proxy (a sample) and servers the hub shut down (jobs it cancelled, must be 0;
   ``--unreachable K`` leaves K servers unanswered, as when their nodes cannot be reached while the
   hub restarts, to show what the hub then does with them).
5. **Token keeper load**: every running server's token keeper asks the hub for its user's token
   (``jupyter_ext/tokens.py``). Its schedule (``next_delay``, the hub's ``auth_refresh_age`` and
   early refresh margin) gives the requests per server and hour, computed below for Check-in's
   1 h and CILogon's 15 min tokens; then one real ``TokenKeeper.update()`` per running server is
   made against the hub (concurrency ``--keeper-concurrency``) twice: first when every user's
   auth is due for a refresh (oauthenticator's userinfo call, a token grant for tokens within the
   margin), then again right away (within ``auth_refresh_age``: no refresh), with hub CPU per
   request and the provider calls.

Results and the reading of them: benchmarks/README.md ("Scale: ...").
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import os
import random
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from sgtest.commands import FakeCommand  # noqa: E402
from sgtest.hub import RunningHub, free_port, wait_for  # noqa: E402
from sgtest.oidc import load_example  # noqa: E402

GROUPS = [f"vo.bench{k:02d}.example" for k in range(20)]
ADMIN_GROUP = "vo.gateway.example:role=admin"
AUTHORITY = "aai.egi.eu"
JOB_NAME = "sgbench-scale"
#: first job id of the simulated jobs (far from the test Slurm's ids)
FIRST_JOB = 7_000_001
#: the unix account the simulated jobs run as: one that exists on every Debian machine and passes
#: the spawner's uid floor, so a stop reaches the stand-in scancel (which only logs)
JOB_ACCOUNT = "nobody"
#: with --profile: run the hub under cProfile (a sitecustomize on its PYTHONPATH), dumped at exit
PROFILE_HOOK = """import atexit, cProfile, os
_profile = cProfile.Profile()
_profile.enable()
atexit.register(lambda: (_profile.disable(), _profile.dump_stats(os.environ["SG_SCALE_PROFILE"])))
"""
LOG_TIME = re.compile(r"^\[\w (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})")


# -- the database ------------------------------------------------------------------------------


def entitlement(group: str) -> str:
    if ":role=" in group:
        return f"urn:mace:egi.eu:group:{group}#{AUTHORITY}"
    return f"urn:mace:egi.eu:group:{group}:role=member#{AUTHORITY}"


def jwt_like(rng: random.Random, size: int, tag: str) -> str:
    """An opaque string of about ``size`` characters shaped like a JWT, starting with ``tag``."""
    body = base64.urlsafe_b64encode(rng.randbytes(size * 3 // 4)).decode().rstrip("=")
    return f"{tag}.{body[: size // 2]}.{body[size // 2:]}"


def node_address(i: int) -> str:
    """The loopback address of simulated server ``i`` (127.216.X.Y: away from the test pods' 127.0.X.Y)."""
    return f"127.216.{i // 250}.{i % 250 + 1}"


def build_database(path: Path, n_users: int, n_running: int, crypt_key: str, node_port: int,
                   rng: random.Random, lifetime: int = 3600) -> list[dict]:
    """Write the hub database (see the module docstring); return the running servers' facts."""
    from jupyterhub import orm, roles, scopes
    from jupyterhub.crypto import CryptKeeper
    from jupyterhub.utils import hash_token, new_token
    from sqlalchemy import insert

    from science_gateway.hub.api import TOKEN_SCOPE, TOKEN_SCOPE_DESCRIPTION
    from science_gateway.hub.checkin import CheckinAuthenticator
    from science_gateway.hub.config import SERVER_TOKEN_SCOPES, USER_ROLE
    from science_gateway.hub.entitlements import safe_username

    if path.exists():
        path.unlink()
    db = orm.new_session_factory(f"sqlite:///{path}")()
    scopes.define_custom_scopes({TOKEN_SCOPE: {"description": TOKEN_SCOPE_DESCRIPTION}})
    for spec in roles.get_default_roles():
        if spec["name"] == "user":
            spec = {**spec, **USER_ROLE}
        roles.create_role(db, spec, commit=False)
    db.commit()
    role_id = {r.name: r.id for r in db.query(orm.Role)}
    db.execute(insert(orm.Group), [{"name": g, "properties": {}} for g in [*GROUPS, ADMIN_GROUP]])
    group_id = {g.name: g.id for g in db.query(orm.Group)}

    auth = CheckinAuthenticator(client_id="bench", client_secret="bench", authorize_url="http://x/a",
                                token_url="http://x/t", userdata_url="http://x/u")
    keeper = CryptKeeper(keys=[binascii.a2b_hex(crypt_key)])
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    users, memberships, user_roles = [], [], []
    for i in range(n_users):
        sub = f"{secrets.token_hex(16)}@egi.eu"
        name = safe_username(f"bench{i:05d}.{sub}")
        groups = rng.sample(GROUPS, rng.randint(1, 3))
        admin = i % 997 == 0
        if admin:
            groups.append(ADMIN_GROUP)
        user_info = {
            "sub": sub, "voperson_id": sub, "name": f"Bench User {i}", "given_name": "Bench",
            "family_name": f"User {i}", "email": f"bench{i}@example.org", "email_verified": True,
            "eduperson_entitlement": [entitlement(g) for g in groups],
            "eduperson_assurance": ["https://refeds.org/assurance/IAP/low"],
        }
        token_info = {
            "access_token": jwt_like(rng, 1100, f"at-{i}"),
            "refresh_token": jwt_like(rng, 600, f"rt-{i}"),
            "id_token": jwt_like(rng, 1400, f"id-{i}"),
            "token_type": "Bearer", "scope": " ".join(auth.scope), "expires_in": lifetime,
            # tokens at every phase of their life, as on a hub that has run for a while
            "expires_at": int(time.time() + rng.uniform(30, lifetime)),
        }
        auth_state = auth.build_auth_state_dict(token_info, user_info)
        auth_state["unix_account"] = name
        users.append({
            "id": i + 1, "name": name, "admin": admin, "created": now - timedelta(days=rng.uniform(1, 900)),
            "last_activity": now - timedelta(hours=rng.uniform(0, 2000)), "cookie_id": new_token(),
            "encrypted_auth_state": keeper._encrypt(auth_state),
        })
        memberships += [{"user_id": i + 1, "group_id": group_id[g]} for g in groups]
        user_roles.append({"user_id": i + 1, "role_id": role_id["user"]})
        if admin:
            user_roles.append({"user_id": i + 1, "role_id": role_id["admin"]})
    db.execute(insert(orm.User), users)
    db.execute(orm.user_group_map.insert(), memberships)
    db.execute(orm._role_associations["user"].__table__.insert(), user_roles)
    db.commit()

    # the hub's own OAuth client (JupyterHub updates it at start); tokens are issued by it
    db.add(orm.OAuthClient(identifier="jupyterhub", description="JupyterHub", redirect_uri="/hub/oauth_callback"))
    running = []
    step = max(1, n_users // n_running)
    for k in range(n_running):
        row = users[k * step]
        user = db.get(orm.User, row["id"])
        name, ip = user.name, node_address(k)
        job_id = str(FIRST_JOB + k)
        server = orm.Server(proto="http", ip=ip, port=node_port, base_url=f"/user/{name}/",
                            cookie_name=f"jupyterhub-user-{name}")
        db.add(server)
        # what JupyterHub resolves Spawner.server_token_scopes to for a user without extra roles
        token_scopes = [s.split("!")[0] + (f"!server={name}/" if s.endswith("!server") else f"!user={name}")
                        for s in SERVER_TOKEN_SCOPES]
        token = orm.APIToken.new(user=user, scopes=token_scopes, note=f"Server at /user/{name}/")
        client = orm.OAuthClient(identifier=f"jupyterhub-user-{name}", secret=hash_token(token),
                                 redirect_uri=f"/user/{name}/oauth_callback", description=f"Server at /user/{name}/",
                                 allowed_scopes=[f"access:servers!server={name}/"])
        db.add(client)
        db.add(orm.Spawner(
            user=user, name="", server=server, oauth_client_id=client.identifier,
            state={"job_id": job_id, "job_status": f"RUNNING {ip}", "port": node_port, "job_account": JOB_ACCOUNT},
            started=now - timedelta(hours=rng.uniform(0, 8)), last_activity=now - timedelta(minutes=rng.uniform(0, 60)),
            user_options={"partition": "cpu", "cores": 1, "memory_gb": 2, "walltime_hours": 8},
        ))
        running.append({"name": name, "ip": ip, "job_id": job_id, "token": token, "cookie_id": row["cookie_id"]})
    db.commit()
    db.close()
    return running


def squeue_answer(running: list[dict]) -> str:
    """What ``squeue`` (in the poller's format) says about the running servers' jobs."""
    from science_gateway.spawners.slurm_script import SQUEUE_FIELDS, SQUEUE_SEP

    lines = []
    for server in running:
        fields = {"job_id": server["job_id"], "state": "RUNNING", "reason": "None", "start_time": "2026-12-04T08:00:00",
                  "host": server["ip"], "partition": "cpu", "user": server["name"], "name": JOB_NAME}
        lines.append(SQUEUE_SEP.join(fields[f] for f in SQUEUE_FIELDS))
    return "\n".join(lines) + "\n"


# -- simulated nodes and identity provider ------------------------------------------------------


class Simulation:
    """The running servers (one loopback address each) and a counting OIDC provider, in a thread."""

    def __init__(self, addresses: list[str], node_port: int, lifetime: int = 3600):
        self.addresses, self.node_port, self.lifetime = addresses, node_port, lifetime
        self.idp_port = free_port()
        self.counts = {"server": 0, "userinfo": 0, "token": 0}
        self.users: dict[str, dict] = {}  # access token prefix -> userinfo
        self._loop = asyncio.new_event_loop()
        self._servers = []
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def idp_url(self) -> str:
        return f"http://127.0.0.1:{self.idp_port}"

    def start(self):
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(60)
        return self

    async def _start(self):
        import jupyterhub
        from tornado import httpserver, netutil, web

        sim = self

        class Node(web.RequestHandler):
            def get(self, *args):
                sim.counts["server"] += 1
                self.set_header("X-JupyterHub-Version", jupyterhub.__version__)
                self.write({"version": "simulated"})

        class UserInfo(web.RequestHandler):
            def get(self):
                sim.counts["userinfo"] += 1
                token = self.request.headers.get("Authorization", "").removeprefix("Bearer ")
                info = sim.users.get(token.split(".")[0].split("-")[-1])
                if info is None:
                    raise web.HTTPError(401)
                self.write(info)

        class Token(web.RequestHandler):
            def post(self):
                sim.counts["token"] += 1
                refresh = self.get_body_argument("refresh_token", "")
                i = refresh.split(".")[0].split("-")[-1]
                self.write({"access_token": f"at-{i}.{secrets.token_urlsafe(800)}", "refresh_token": refresh,
                            "id_token": f"id-{i}.{secrets.token_urlsafe(1000)}", "token_type": "Bearer",
                            "expires_in": sim.lifetime, "scope": "openid profile email"})

        nodes = httpserver.HTTPServer(web.Application([(r"/(.*)", Node)]))
        for address in self.addresses:
            nodes.add_sockets(netutil.bind_sockets(self.node_port, address))
        idp = httpserver.HTTPServer(web.Application([(r"/userinfo", UserInfo), (r"/token", Token)]))
        idp.add_sockets(netutil.bind_sockets(self.idp_port, "127.0.0.1"))
        self._servers = [nodes, idp]

    def stop(self):
        async def stop():
            for server in self._servers:
                server.stop()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def user_infos(db_path: Path, crypt_key: str, names: set[str]) -> dict[str, dict]:
    """The stored userinfo of ``names`` by the index the stand-in provider finds in their tokens."""
    import sqlite3

    from jupyterhub.crypto import CryptKeeper

    keeper = CryptKeeper(keys=[binascii.a2b_hex(crypt_key)])
    out = {}
    with sqlite3.connect(db_path) as con:
        for name, blob in con.execute("SELECT name, encrypted_auth_state FROM users"):
            if name in names:
                state = keeper._decrypt(blob)
                out[state["access_token"].split(".")[0].split("-")[-1]] = state["oauth_user"]
    return out


# -- the hub process ----------------------------------------------------------------------------


class ProcStats:
    """CPU seconds and memory of one process, from /proc."""

    def __init__(self, pid: int):
        self.pid = pid

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_mb(self) -> dict:
        status = Path(f"/proc/{self.pid}/status").read_text()
        value = {k: int(v) / 1024 for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M)}
        return {"rss_mb": round(value["VmRSS"], 1), "peak_rss_mb": round(value["VmHWM"], 1)}

    def snapshot(self) -> dict:
        return {"cpu_s": round(self.cpu(), 2), **self.memory_mb()}


def hub_config(sim: Simulation, commands: Path, prefix: str) -> dict:
    config = load_example("checkin")
    config["JupyterHub"].update({
        "spawner_class": "science-gateway-slurm",
        # the hub is stopped after each run with its servers still "running" (as in an upgrade)
        "cleanup_servers": False,
    })
    config["CheckinAuthenticator"].update({
        "client_id": "bench", "client_secret": "bench-secret",
        "authorize_url": f"{sim.idp_url}/authorize", "token_url": f"{sim.idp_url}/token",
        "userdata_url": f"{sim.idp_url}/userinfo",
        "allowed_groups": GROUPS, "admin_groups": [ADMIN_GROUP],
    })
    config["SlurmSpawner"] = {
        "python_prefix": prefix, "job_name": JOB_NAME,
        "sbatch_path": str(commands / "sbatch"), "scancel_path": str(commands / "scancel"),
        "user_command_prefix": [],
    }
    config["SlurmQueuePoller"] = {"squeue": str(commands / "squeue")}  # production intervals (30 s, 1 s)
    limits = {"cpu": {"max_cores": 4, "max_memory_gb": 16, "max_walltime_hours": 12}}
    config["ResourcePolicy"] = {"groups": {g: {"partitions": limits} for g in GROUPS}}
    return config


def login_cookie(state_dir: Path, cookie_id: str) -> str:
    """The hub's login cookie for the user with ``cookie_id`` (what an OIDC login leaves in a browser)."""
    from tornado.web import create_signed_value

    secret = binascii.a2b_hex((state_dir / "jupyterhub_cookie_secret").read_text().strip())
    return create_signed_value(secret, "jupyterhub-hub-login", cookie_id).decode()


def first_ok(url: str, timeout: float, **kwargs) -> tuple[float, int]:
    """Poll ``url`` until it answers 200; return (monotonic time of that answer, its status)."""
    def ok():
        r = requests.get(url, timeout=30, allow_redirects=False, **kwargs)
        return r.status_code == 200
    wait_for(ok, timeout, interval=0.02, what=url)
    return time.monotonic(), 200


def log_facts(log: str, started_wall: float) -> dict:
    facts = {}
    m = re.search(r"Initialized (\d+) spawners in ([\d.]+) seconds", log)
    if m:
        facts["init_spawners"] = {"spawners": int(m.group(1)), "seconds": float(m.group(2))}
    for line in log.splitlines():
        if "JupyterHub is now running" in line and (t := LOG_TIME.match(line)):
            wall = datetime.strptime(t.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
            facts["now_running_s"] = round(wall - started_wall, 2)
            break
    facts["warnings"] = len(re.findall(r"^\[W ", log, re.M))
    facts["errors"] = len(re.findall(r"^\[E ", log, re.M))
    facts["stopped_while_down"] = log.count("appears to have stopped while the Hub was down")
    facts["not_running_at"] = log.count("does not appear to be running at")
    return facts


def calls_between(fake: FakeCommand, start: float, end: float) -> int:
    return sum(1 for line in Path(fake.log).read_text().splitlines()
               if line.split()[1:2] == [fake.name] and start <= float(line.split()[0]) < end)


# -- the token keeper's schedule ---------------------------------------------------------------


def keeper_schedule(lifetime: float, hours: float = 24, *, interval: float, margin: float, min_interval: float,
                    hub_margin: float, refresh_age: float, activity_interval: float | None, seed: int = 1) -> dict:
    """One server's requests to the hub per hour, and what the hub then asks the provider.

    The keeper follows ``next_delay`` (jupyter_ext/tokens.py); each request authenticated by the
    user's token (the keeper's, and the server's activity report every ``activity_interval``)
    makes the hub call ``refresh_user`` when the last one is ``refresh_age`` old: oauthenticator's
    userinfo call, or a token grant when the token has less than ``hub_margin`` left.
    """
    from science_gateway.jupyter_ext.tokens import next_delay

    rng = random.Random(seed)
    end = hours * 3600
    expires_at = rng.uniform(hub_margin + 60, lifetime)
    events = [(rng.uniform(0, interval), "keeper")]
    if activity_interval:
        events.append((rng.uniform(0, activity_interval), "activity"))
    last_refresh = -1e9
    counts = {"keeper": 0, "activity": 0, "userinfo": 0, "token_grant": 0}
    while events:
        events.sort()
        now, kind = events.pop(0)
        if now >= end:
            continue
        counts[kind] += 1
        if now - last_refresh >= refresh_age:
            last_refresh = now
            if expires_at - now < hub_margin:
                counts["token_grant"] += 1
                expires_at = now + lifetime
            else:
                counts["userinfo"] += 1
        if kind == "keeper":
            events.append((now + next_delay(expires_at, now, interval, margin, min_interval), "keeper"))
        else:
            events.append((now + activity_interval * (1 + 0.2 * (rng.random() - 0.5)), "activity"))
    return {k: round(v / hours, 2) for k, v in counts.items()}


def schedule_table(servers: int) -> list[dict]:
    from science_gateway.hub.oauth import GatewayOAuthenticator
    from science_gateway.jupyter_ext.tokens import TokenKeeper

    keeper, auth = TokenKeeper(), GatewayOAuthenticator()
    rows = []
    for provider, lifetime in (("Check-in, 1 h tokens", 3600), ("CILogon, 15 min tokens", 900)):
        for with_activity in (False, True):
            per_hour = [keeper_schedule(lifetime, interval=keeper.interval, margin=keeper.refresh_margin,
                                        min_interval=keeper.min_interval, hub_margin=auth.access_token_refresh_margin,
                                        refresh_age=auth.auth_refresh_age, activity_interval=300 if with_activity else None,
                                        seed=s) for s in range(50)]
            mean = {k: statistics.fmean(p[k] for p in per_hour) for k in per_hour[0]}
            rows.append({
                "provider": provider, "with_activity_reports": with_activity,
                "per_server_per_hour": {k: round(v, 2) for k, v in mean.items()},
                f"per_minute_{servers}_servers": {k: round(v * servers / 60, 1) for k, v in mean.items()},
            })
    return rows


# -- the token keepers against the hub ---------------------------------------------------------


def keeper_round(hub_url: str, running: list[dict], concurrency: int, workdir: Path) -> dict:
    """One real TokenKeeper.update() per running server, ``concurrency`` at a time."""
    from science_gateway.jupyter_ext.tokens import TokenKeeper

    async def run():
        sem = asyncio.Semaphore(concurrency)
        latencies, failures = [], 0

        async def one(server):
            nonlocal failures
            keeper = TokenKeeper(hub_api_url=f"{hub_url}/hub/api", username=server["name"], api_token=server["token"],
                                 token_file=str(workdir / "tokens" / server["name"]))
            async with sem:
                t0 = time.monotonic()
                try:
                    await keeper.update()
                except Exception as e:  # noqa: BLE001 - counted and named in the report
                    failures += 1
                    print("keeper failed:", server["name"], type(e).__name__, str(e)[:100], flush=True)
                    return
                latencies.append(time.monotonic() - t0)

        t0 = time.monotonic()
        await asyncio.gather(*(one(s) for s in running))
        return latencies, failures, time.monotonic() - t0

    latencies, failures, wall = asyncio.run(run())
    latencies.sort()
    return {
        "requests": len(running), "failures": failures, "wall_s": round(wall, 2),
        "p50_ms": round(1000 * statistics.median(latencies), 1) if latencies else None,
        "p95_ms": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 1) if latencies else None,
    }


# -- one size ------------------------------------------------------------------------------------


def run_size(n_users: int, args, workdir: Path) -> dict:
    rng = random.Random(n_users)
    state = workdir / f"hub-{n_users}"
    state.mkdir(parents=True)
    crypt_key = secrets.token_hex(32)
    (state / "jupyterhub_cookie_secret").write_text(secrets.token_hex(32))
    os.chmod(state / "jupyterhub_cookie_secret", 0o600)
    t0 = time.monotonic()
    running = build_database(state / "jupyterhub.sqlite", n_users, args.running, crypt_key, args.node_port, rng)
    result = {"users": n_users, "running": len(running), "build_db_s": round(time.monotonic() - t0, 1),
              "db_mb": round((state / "jupyterhub.sqlite").stat().st_size / 2**20, 1)}
    print(f"[{n_users}] database: {result['build_db_s']} s, {result['db_mb']} MB", flush=True)

    commands = workdir / f"commands-{n_users}"
    squeue = FakeCommand(commands, "squeue", out=squeue_answer(running))
    FakeCommand(commands, "sbatch", log=squeue.log, out="")
    scancel = FakeCommand(commands, "scancel", log=squeue.log, out="")

    # --unreachable: the first K servers' nodes do not answer (a network problem during the restart)
    sim = Simulation([s["ip"] for s in running[args.unreachable:]], args.node_port).start()
    sim.users = user_infos(state / "jupyterhub.sqlite", crypt_key, {s["name"] for s in running})
    env = {"JUPYTERHUB_CRYPT_KEY": crypt_key}
    if args.profile:
        hook = workdir / "profile-hook"
        hook.mkdir(exist_ok=True)
        (hook / "sitecustomize.py").write_text(PROFILE_HOOK)
        env.update(PYTHONPATH=str(hook), SG_SCALE_PROFILE=str(Path(args.profile).resolve() / f"hub-{n_users}.prof"))
    hub = RunningHub(state, config=hub_config(sim, commands, args.prefix), env=env)
    home_user = running[0]
    cookie = {"Cookie": f"jupyterhub-hub-login={login_cookie(state, home_user['cookie_id'])}"}
    try:
        started_wall, started = time.time(), time.monotonic()
        hub.start(timeout=args.start_timeout, interval=0.02)
        stats = ProcStats(hub.proc.pid)
        api_at, _ = first_ok(f"{hub.url}/hub/api/", 60)
        ready = stats.snapshot()
        home_at, _ = first_ok(f"{hub.url}/hub/home", 60, headers=cookie)
        result["first_200_api_s"] = round(api_at - started, 2)
        result["first_200_home_s"] = round(home_at - started, 2)
        result["at_first_answer"] = ready
        print(f"[{n_users}] /hub/api/ 200 after {result['first_200_api_s']} s, /hub/home after "
              f"{result['first_200_home_s']} s; hub {ready}", flush=True)
        time.sleep(max(0.0, started + args.window - time.monotonic()))
        result["after_window"] = stats.snapshot()
        result["squeue_calls_first_window"] = calls_between(squeue, started_wall, started_wall + args.window)
        result["scancel_calls"] = scancel.calls()
        # our stop() cancels the job (scancel JOBID) and the session's Dask workers (scancel --name=...)
        result["jobs_cancelled"] = len({line[-1] for line in scancel.lines() if line and line[-1].isdigit()})
        result["unreachable"] = args.unreachable
        result["server_checks"] = sim.counts["server"]
        sample = rng.sample(running[args.unreachable:], min(20, len(running) - args.unreachable))
        reachable = sum(requests.get(f"{hub.url}/user/{s['name']}/api", timeout=10).status_code == 200 for s in sample)
        result["reachable_through_proxy"] = f"{reachable}/{len(sample)}"
        result.update(log_facts(hub.log_text(), started_wall))
        print(f"[{n_users}] after {args.window:.0f} s: squeue calls {result['squeue_calls_first_window']}, "
              f"jobs cancelled {result['jobs_cancelled']} (unreachable {args.unreachable}), hub {result['after_window']}, reachable {result['reachable_through_proxy']}, "
              f"log {result.get('init_spawners')}", flush=True)

        keepers = {}
        for label in () if args.skip_keepers else ("refresh due", "within auth_refresh_age"):
            idp_before = dict(sim.counts)
            cpu_before = stats.cpu()
            round_ = keeper_round(hub.url, running, args.keeper_concurrency, workdir / f"keepers-{n_users}")
            cpu = stats.cpu() - cpu_before
            round_["hub_cpu_s"] = round(cpu, 2)
            round_["hub_cpu_ms_per_request"] = round(1000 * cpu / len(running), 1)
            round_["idp_userinfo"] = sim.counts["userinfo"] - idp_before["userinfo"]
            round_["idp_token_grants"] = sim.counts["token"] - idp_before["token"]
            keepers[label] = round_
            print(f"[{n_users}] keepers ({label}): {round_}", flush=True)
        result["keeper_rounds"] = keepers
        result["final"] = stats.snapshot()
    finally:
        hub.stop()
        sim.stop()
    return result


def report(results: dict) -> None:
    sizes = sorted(results["sizes"], key=lambda r: r["users"])
    first, last = sizes[0], sizes[-1]

    def ratio(a, b):
        return f"{b / a:.2f}" if a else "n/a"

    rows = [
        ("first 200 of /hub/api/ (s)", lambda r: r["first_200_api_s"]),
        ("first 200 of /hub/home, logged in (s)", lambda r: r["first_200_home_s"]),
        ("'JupyterHub is now running' (s)", lambda r: r.get("now_running_s")),
        ("init_spawners (s, JupyterHub's log)", lambda r: r.get("init_spawners", {}).get("seconds")),
        ("squeue calls, first minute", lambda r: r["squeue_calls_first_window"]),
        ("hub CPU at first answer (s)", lambda r: r["at_first_answer"]["cpu_s"]),
        ("hub CPU after the minute (s)", lambda r: r["after_window"]["cpu_s"]),
        ("hub RSS after the minute (MB)", lambda r: r["after_window"]["rss_mb"]),
        ("hub peak RSS (MB)", lambda r: r["final"]["peak_rss_mb"]),
        ("jobs cancelled by the hub (servers lost)", lambda r: r["jobs_cancelled"]),
        ("keeper request, refresh due: hub CPU (ms)", lambda r: r["keeper_rounds"]["refresh due"]["hub_cpu_ms_per_request"]),
        ("keeper request, refresh due: p50 (ms)", lambda r: r["keeper_rounds"]["refresh due"]["p50_ms"]),
        ("keeper request, no refresh: hub CPU (ms)",
         lambda r: r["keeper_rounds"]["within auth_refresh_age"]["hub_cpu_ms_per_request"]),
        ("keeper request, no refresh: p50 (ms)", lambda r: r["keeper_rounds"]["within auth_refresh_age"]["p50_ms"]),
    ]
    print(f"\n| | {first['users']:,} users | {last['users']:,} users | ratio |")
    print("|---|---|---|---|")
    def value(get, r):
        try:
            return get(r)
        except KeyError:  # a part not measured (--skip-keepers)
            return None

    for label, get in rows:
        a, b = value(get, first), value(get, last)
        print(f"| {label} | {a} | {b} | {ratio(a, b) if isinstance(a, (int, float)) and isinstance(b, (int, float)) else ''} |")
    servers = results["args"]["running"]
    print(f"\nToken keepers of {servers} servers: requests to the hub and calls to the provider per minute, from the "
          "schedule; hub CPU from the measured cost per request (refresh due / not due) at each size")
    print("| provider | also activity reports | hub requests/min | userinfo/min | token grants/min | "
          + " | ".join(f"hub CPU s/min @{r['users']:,}" for r in sizes) + " |")
    print("|---|---|---|---|---|" + "---|" * len(sizes))
    for row in results["schedule"]:
        m = row[f"per_minute_{servers}_servers"]
        requests_ = m["keeper"] + m["activity"]
        refreshes = m["userinfo"] + m["token_grant"]
        cpu = []
        for r in sizes:
            rounds = r.get("keeper_rounds") or {}
            if not rounds:
                cpu.append("")
                continue
            due = rounds["refresh due"]["hub_cpu_ms_per_request"]
            not_due = rounds["within auth_refresh_age"]["hub_cpu_ms_per_request"]
            cpu.append(f"{(refreshes * due + (requests_ - refreshes) * not_due) / 1000:.2f}")
        print(f"| {row['provider']} | {'yes' if row['with_activity_reports'] else 'no'} | {requests_:.1f} | "
              f"{m['userinfo']:.1f} | {m['token_grant']:.1f} | " + " | ".join(cpu) + " |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, nargs="+", default=[1000, 10000], help="user counts to measure")
    parser.add_argument("--running", type=int, default=500, help="running servers in the database")
    parser.add_argument("--window", type=float, default=60, help="seconds from process start to count squeue calls")
    parser.add_argument("--node-port", type=int, default=21600, help="port of every simulated server")
    parser.add_argument("--keeper-concurrency", type=int, default=10, help="token keeper requests at once")
    parser.add_argument("--start-timeout", type=float, default=300, help="seconds to wait for the hub")
    parser.add_argument("--prefix", default=os.environ.get("SG_TEST_VENV") or sys.prefix,
                        help="the venv of jupyterhub-singleuser (written into the spawner's config only)")
    parser.add_argument("--unreachable", type=int, default=0,
                        help="of the running servers, this many do not answer (their node is unreachable)")
    parser.add_argument("--profile", help="write a cProfile of each hub (start to stop) into this folder")
    parser.add_argument("--skip-keepers", action="store_true", help="skip the token keeper rounds")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--report", help="print the tables of an earlier --json file and exit")
    parser.add_argument("--keep", action="store_true", help="keep the databases and hub logs")
    args = parser.parse_args(argv)
    if args.report:
        report(json.loads(Path(args.report).read_text()))
        return
    if args.running > 1000:
        parser.error("--running: at most 1000 (one loopback address each in 127.216.0-3.X)")

    workdir = Path(tempfile.mkdtemp(prefix="sgbench-scale-", dir="/var/tmp"))
    print("state and logs in", workdir, flush=True)
    results = {"args": vars(args), "date": datetime.now(timezone.utc).isoformat(timespec="minutes"),
               "loadavg_before": os.getloadavg(), "sizes": [], "schedule": schedule_table(args.running)}
    try:
        for n in args.users:
            results["sizes"].append(run_size(n, args, workdir))
            results["loadavg_after_" + str(n)] = os.getloadavg()
    finally:
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report(results)


if __name__ == "__main__":
    main()
