#!/usr/bin/python3
"""The Science Gateway test node: the one stand-in of the test Kubernetes control plane.

No container runtime or image can run on the test machines, so this agent plays the kubelet for
two Nodes, ``sg-node-cpu`` and ``sg-node-gpu``: it registers them (labels, taints, capacity),
keeps them Ready (status and Lease heartbeats) and runs each pod bound to them by the real
scheduler as local processes:

- as the pod's ``securityContext.runAsUser``/``runAsGroup`` (+ ``fsGroup`` as a supplementary
  group); a pod without a non-root user does not run;
- on its own loopback address 127.0.X.Y (``status.podIP``); ``0.0.0.0`` in
  ``JUPYTERHUB_SERVICE_URL`` and in ``--ip=`` arguments becomes that address;
- with the PATH and environment that the images file (``images_file``, JSON
  ``{"image-without-tag": {"path": "...", "env": {...}, "entrypoint": [...], "cmd": [...],
  "workdir": "..."}}``, read at each container start) gives the image; an image not in it is
  ``ErrImagePull``;
- with ``env``/``envFrom`` and its volumes (persistentVolumeClaim, hostPath, emptyDir, secret,
  configMap, projected secret/configMap/serviceAccountToken) bind-mounted at each ``mountPath``
  in a private mount namespace (``unshare -m``);
- reporting real status (Pending, Running, terminated with the exit code, restartPolicy and
  restartCount, activeDeadlineSeconds) and honouring deletion (SIGTERM to the process group,
  SIGKILL after the grace period, then the pod is deleted for good).

It also is the ``sg-local`` storage provisioner: a Pending claim of that class gets a hostPath
PersistentVolume under ``volumes_dir`` (the controller-manager binds the two), removed again
when the claim is deleted.

Each container runs under a small supervisor process (``agent.py --supervise DIR``) that waits
for it and writes its exit status, so the agent can be restarted without ending the pods: it
adopts them again from ``pods_dir``.

Usage (as root, Debian's python3, standard library only)::

    agent.py CONFIG.json            # run the node agent (scripts/services/kubernetes start)
    agent.py --kill-all CONFIG.json # end every pod process (scripts/services/kubernetes stop)
"""

import base64
import datetime
import http.client
import json
import logging
import os
import pwd
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse

log = logging.getLogger("sg-node")
AGENT = os.path.abspath(__file__)
PYTHON = sys.executable or "/usr/bin/python3"

NODES = {
    "sg-node-cpu": {
        "labels": {"science-gateway.io/pool": "cpu"},
        "taints": [],
        "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "50Gi"},
    },
    "sg-node-gpu": {
        "labels": {"science-gateway.io/pool": "gpu"},
        "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
        "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "50Gi",
                     "nvidia.com/gpu": "2"},
    },
}
LEASE_SECONDS = 40
LEASE_RENEW = 10
STATUS_EVERY = 60
PROVISIONER = "science-gateway.io/sg-local"
# the Service of the API server inside the pods: the control plane listens on loopback
STOP = threading.Event()


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str) -> float:
    return datetime.datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S").replace(
        tzinfo=datetime.timezone.utc).timestamp()


class ApiError(Exception):
    def __init__(self, status, method, path, body):
        self.status = status
        self.body = body
        message = body.get("message", "") if isinstance(body, dict) else str(body)[:300]
        super().__init__(f"{method} {path}: HTTP {status}: {message}")


class Api:
    """A small client of the API server with one identity (a bearer token)."""

    def __init__(self, url: str, ca_file: str, token: str):
        parsed = urllib.parse.urlsplit(url)
        self.host, self.port = parsed.hostname, parsed.port or 443
        self.context = ssl.create_default_context(cafile=ca_file)
        self.token = token
        self.local = threading.local()

    def _connection(self, timeout):
        return http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=timeout)

    def request(self, method, path, body=None, params=None, content_type="application/json",
                ok_missing=False):
        if params:
            path = f"{path}?{urllib.parse.urlencode(params)}"
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json",
                   "User-Agent": "sg-node-agent/1"}
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in range(2):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = self._connection(30)
            try:
                conn.request(method, path, body=data, headers=headers)
                response = conn.getresponse()
                raw = response.read()
                break
            except (OSError, http.client.HTTPException):
                conn.close()
                self.local.conn = None
                if attempt:
                    raise
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            payload = {"message": raw.decode(errors="replace")}
        if response.status == 404 and ok_missing:
            return None
        if response.status >= 400:
            raise ApiError(response.status, method, path, payload)
        return payload

    def watch(self, path, params):
        """Yield the events of one watch request until the server ends it."""
        params = dict(params, watch="1", allowWatchBookmarks="true")
        conn = self._connection(params.get("timeoutSeconds", 300) + 30)
        try:
            conn.request("GET", f"{path}?{urllib.parse.urlencode(params)}", headers={
                "Authorization": f"Bearer {self.token}", "Accept": "application/json",
                "User-Agent": "sg-node-agent/1"})
            response = conn.getresponse()
            if response.status >= 400:
                raise ApiError(response.status, "WATCH", path, json.loads(response.read() or b"{}"))
            while not STOP.is_set():
                line = response.readline()
                if not line:
                    return
                yield json.loads(line)
        finally:
            conn.close()


def informer(api, path, params, on_event, name):
    """List then watch ``path`` forever, calling ``on_event(type, object)``; relists on 410."""
    while not STOP.is_set():
        try:
            listing = api.request("GET", path, params=params)
            version = listing["metadata"]["resourceVersion"]
            on_event("SYNC", listing.get("items", []))
            while not STOP.is_set():
                for event in api.watch(path, dict(params, resourceVersion=version, timeoutSeconds=240)):
                    obj = event.get("object", {})
                    if event["type"] == "ERROR":
                        if obj.get("code") == 410:
                            raise ApiError(410, "WATCH", path, obj)
                        raise ApiError(obj.get("code", 500), "WATCH", path, obj)
                    version = obj.get("metadata", {}).get("resourceVersion", version)
                    if event["type"] != "BOOKMARK":
                        on_event(event["type"], obj)
        except ApiError as e:
            if e.status != 410:
                log.warning("%s: %s", name, e)
                STOP.wait(1)
        except Exception as e:  # noqa: BLE001 - a watch must outlive network trouble
            log.warning("%s: %s: %s", name, type(e).__name__, e)
            STOP.wait(1)


# --- the images file, users, addresses --------------------------------------------------------

def image_name(image: str) -> str:
    """``registry/name:tag`` or ``name@sha256:...`` -> the name without tag or digest."""
    image = image.split("@", 1)[0]
    head, sep, tail = image.rpartition(":")
    if sep and "/" not in tail:
        image = head
    return image


class IpPool:
    """Unique loopback addresses 127.0.X.Y (X >= 2) for the pods, kept in each pod's dir."""

    def __init__(self, pods_dir):
        self.pods_dir = pods_dir
        self.lock = threading.Lock()

    def allocate(self, pod_dir):
        path = os.path.join(pod_dir, "ip")
        with self.lock:
            if os.path.exists(path):
                return open(path).read().strip()
            used = set()
            for entry in os.listdir(self.pods_dir):
                try:
                    used.add(open(os.path.join(self.pods_dir, entry, "ip")).read().strip())
                except OSError:
                    pass
            for x in range(2, 255):
                for y in range(1, 255):
                    ip = f"127.0.{x}.{y}"
                    if ip not in used:
                        with open(path, "w") as f:
                            f.write(ip)
                        return ip
        raise RuntimeError("no loopback address left")


# --- container processes ------------------------------------------------------------------------

def read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def write_json(path, value, mode=0o600):
    tmp = f"{path}.tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w") as f:
        json.dump(value, f)
    os.replace(tmp, path)


def pid_alive(pid, marker):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return marker.encode() in f.read()
    except OSError:
        return False


def supervise(run_dir):
    """The supervisor of one container run: start it in a private mount namespace, wait, record."""
    spec = read_json(os.path.join(run_dir, "spec.json"))
    logfile = open(spec["log"], "ab", buffering=0)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", PYTHON, AGENT, "--exec", run_dir],
        stdin=subprocess.DEVNULL, stdout=logfile, stderr=logfile, start_new_session=True,
        close_fds=True)
    write_json(os.path.join(run_dir, "pid"), {"pid": child.pid, "startedAt": now()})
    code = child.wait()
    # like container runtimes: a signal is 128 + its number
    exit_code = 128 - code if code < 0 else code
    write_json(os.path.join(run_dir, "exit"), {"exitCode": exit_code, "finishedAt": now(),
                                              "signal": -code if code < 0 else 0})


def exec_container(run_dir):
    """Inside the new mount namespace: bind-mount the volumes, drop to the user, exec."""
    spec = read_json(os.path.join(run_dir, "spec.json"))
    created = []   # mount points made on the host's file system: removed with the pod

    def make_dirs(path):
        missing = []
        while path and not os.path.exists(path):
            missing.append(path)
            path = os.path.dirname(path)
        for path in reversed(missing):
            os.mkdir(path)
            os.chmod(path, 0o755)
            created.append(path)

    try:
        for mount in spec["mounts"]:
            src, dst = mount["source"], mount["target"]
            if os.path.isdir(src):
                make_dirs(dst)
            elif not os.path.exists(dst):
                make_dirs(os.path.dirname(dst))
                open(dst, "a").close()
                created.append(dst)
            write_json(os.path.join(run_dir, "created.json"), created)
            subprocess.run(["mount", "--bind", src, dst], check=True)
            if mount.get("readOnly"):
                subprocess.run(["mount", "-o", "remount,bind,ro", dst], check=True)
        os.makedirs(spec["cwd"], exist_ok=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"sg-node: could not set up the container's mounts: {e}", file=sys.stderr)
        sys.exit(128)
    os.setgroups(spec["groups"])
    os.setgid(spec["gid"])
    os.setuid(spec["uid"])
    os.umask(0o022)
    try:
        os.chdir(spec["cwd"])
    except OSError as e:
        print(f"sg-node: cannot enter working directory {spec['cwd']}: {e}", file=sys.stderr)
        sys.exit(128)
    try:
        os.execvpe(spec["argv"][0], spec["argv"], spec["env"])
    except OSError as e:
        print(f"sg-node: exec {spec['argv'][0]} failed: {e}", file=sys.stderr)
        sys.exit(127)


class Run:
    """One started container process, seen through its run dir."""

    def __init__(self, run_dir):
        self.dir = run_dir

    @property
    def exited(self):
        return read_json(os.path.join(self.dir, "exit"))

    @property
    def started(self):
        return read_json(os.path.join(self.dir, "pid"))

    def alive(self):
        if self.exited:
            return False
        sup = read_json(os.path.join(self.dir, "supervisor"))
        return bool(sup) and pid_alive(sup["pid"], self.dir)

    def signal(self, sig):
        started = self.started
        if started and not self.exited:
            try:
                os.killpg(started["pid"], sig)
            except ProcessLookupError:
                pass


def start_run(run_dir, spec):
    os.makedirs(run_dir, exist_ok=True)
    write_json(os.path.join(run_dir, "spec.json"), spec)
    sup = subprocess.Popen([PYTHON, AGENT, "--supervise", run_dir], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=open(spec["log"], "ab"),
                           start_new_session=True, close_fds=True)
    write_json(os.path.join(run_dir, "supervisor"), {"pid": sup.pid})
    threading.Thread(target=sup.wait, daemon=True).start()   # reap it when it ends
    deadline = time.time() + 10
    while time.time() < deadline and not os.path.exists(os.path.join(run_dir, "pid")):
        time.sleep(0.02)
    return Run(run_dir)


# --- a pod --------------------------------------------------------------------------------------

class PodError(Exception):
    """A container cannot start: reported as its waiting reason and message."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason
        self.message = message


VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value, env):
    """Kubernetes' ``$(VAR)`` expansion (``$$`` escapes, unknown references stay as they are)."""
    def sub(match):
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))
    return VAR_REF.sub(sub, value)


class PodWorker(threading.Thread):
    """Runs one pod bound to a node, from its first sight to its deletion."""

    def __init__(self, node, pod):
        super().__init__(daemon=True, name=f"pod-{pod['metadata']['namespace']}/{pod['metadata']['name']}")
        self.node = node
        self.api = node.api
        self.pod = pod
        self.uid = pod["metadata"]["uid"]
        self.ns = pod["metadata"]["namespace"]
        self.name = pod["metadata"]["name"]
        self.dir = os.path.join(node.agent.pods_dir, self.uid)
        self.changed = threading.Event()
        self.gone = False
        self.sent = None
        self.state = {}        # container name -> {"restarts": n, "run": Run, "waiting": ..., "last": ...}
        self.ip = None
        self.phase = "Pending"
        self.phase_reason = None
        self.phase_message = None
        self.started_at = None
        self.events_sent = set()

    # -- API helpers
    @property
    def path(self):
        return f"/api/v1/namespaces/{self.ns}/pods/{self.name}"

    def update(self, pod):
        self.pod = pod
        self.changed.set()

    def deleted(self):
        self.gone = True
        self.changed.set()

    def event(self, reason, message, type_="Normal", container=None, once=False):
        key = (reason, container, message if once else None)
        if once and key in self.events_sent:
            return
        self.events_sent.add(key)
        stamp = now()
        obj = {"kind": "Pod", "apiVersion": "v1", "namespace": self.ns, "name": self.name, "uid": self.uid}
        if container:
            obj["fieldPath"] = f"spec.containers{{{container}}}"
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{self.name}.{time.time_ns():x}", "namespace": self.ns},
            "involvedObject": obj, "reason": reason, "message": message, "type": type_,
            "source": {"component": "kubelet", "host": self.node.name},
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
            "reportingComponent": "kubelet", "reportingInstance": self.node.name,
        }
        try:
            self.api.request("POST", f"/api/v1/namespaces/{self.ns}/events", body)
        except ApiError as e:
            # a namespace being deleted takes no new events: expected, not worth a warning
            level = logging.DEBUG if e.status == 403 and "being terminated" in str(e) else logging.WARNING
            log.log(level, "event %s for %s/%s: %s", reason, self.ns, self.name, e)
        except OSError as e:
            log.warning("event %s for %s/%s: %s", reason, self.ns, self.name, e)

    def get_object(self, kind, name, optional=False):
        plural = {"Secret": "secrets", "ConfigMap": "configmaps"}[kind]
        obj = self.api.request("GET", f"/api/v1/namespaces/{self.ns}/{plural}/{name}", ok_missing=True)
        if obj is None and not optional:
            raise PodError("CreateContainerConfigError", f'{kind.lower()} "{name}" not found')
        data = {}
        if obj:
            for key, value in (obj.get("data") or {}).items():
                data[key] = base64.b64decode(value) if kind == "Secret" else value.encode()
            for key, value in (obj.get("binaryData") or {}).items():
                data[key] = base64.b64decode(value)
        return data

    # -- the pod's pieces
    def security(self, container):
        pod_sc = self.pod["spec"].get("securityContext") or {}
        sc = container.get("securityContext") or {}
        uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
        if not uid:
            raise PodError("CreateContainerConfigError",
                           "the science-gateway test node runs containers only as a non-root user: "
                           "set securityContext.runAsUser (not 0) on the pod or the container")
        gid = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
        if gid is None:
            try:
                gid = pwd.getpwuid(uid).pw_gid
            except KeyError:
                gid = uid
        groups = [gid]
        if pod_sc.get("fsGroup") is not None:
            groups.append(pod_sc["fsGroup"])
        groups += [g for g in pod_sc.get("supplementalGroups") or [] if g not in groups]
        return uid, gid, groups

    def image(self, container):
        path = self.node.agent.images_file
        images = read_json(path, {}) or {}
        name = image_name(container.get("image", ""))
        if name not in images:
            raise PodError("ErrImagePull",
                           f'image "{container.get("image")}" is not in the test node\'s images file {path} '
                           f"(known: {', '.join(sorted(images)) or 'none'})")
        return images[name]

    def field(self, ref):
        path = ref.get("fieldPath", "")
        meta = self.pod["metadata"]
        simple = {
            "metadata.name": self.name, "metadata.namespace": self.ns, "metadata.uid": self.uid,
            "spec.nodeName": self.node.name, "spec.serviceAccountName": self.pod["spec"].get("serviceAccountName", ""),
            "status.podIP": self.ip, "status.hostIP": "127.0.0.1",
        }
        if path in simple:
            return simple[path]
        match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if match:
            return (meta.get(match.group(1)) or {}).get(match.group(2), "")
        raise PodError("CreateContainerConfigError", f"fieldPath {path} is not supported by the test node")

    def environment(self, container, image, uid):
        env = {"PATH": image.get("path", "/usr/local/bin:/usr/bin:/bin")}
        try:
            env["HOME"] = pwd.getpwuid(uid).pw_dir
        except KeyError:
            env["HOME"] = "/"
        env.update(image.get("env") or {})
        env.update({"HOSTNAME": self.name, "KUBERNETES_SERVICE_HOST": "127.0.0.1",
                    "KUBERNETES_SERVICE_PORT": str(self.node.agent.api_port),
                    "KUBERNETES_SERVICE_PORT_HTTPS": str(self.node.agent.api_port)})
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if key in source:
                    ref = source[key]
                    for k, v in self.get_object(kind, ref["name"], ref.get("optional", False)).items():
                        env[prefix + k] = v.decode(errors="replace")
        for item in container.get("env") or []:
            name = item["name"]
            if "value" in item:
                env[name] = expand(item["value"], env)
            elif "valueFrom" in item:
                vf = item["valueFrom"]
                if "fieldRef" in vf:
                    env[name] = self.field(vf["fieldRef"])
                elif "secretKeyRef" in vf or "configMapKeyRef" in vf:
                    kind, ref = ("Secret", vf["secretKeyRef"]) if "secretKeyRef" in vf else ("ConfigMap", vf["configMapKeyRef"])
                    data = self.get_object(kind, ref["name"], ref.get("optional", False))
                    if ref["key"] in data:
                        env[name] = data[ref["key"]].decode(errors="replace")
                    elif not ref.get("optional", False):
                        raise PodError("CreateContainerConfigError",
                                       f'couldn\'t find key {ref["key"]} in {kind} {self.ns}/{ref["name"]}')
                elif "resourceFieldRef" in vf:
                    res = vf["resourceFieldRef"]["resource"]
                    kind, _, what = res.partition(".")
                    env[name] = str(((container.get("resources") or {}).get(kind) or {}).get(what, "0"))
            else:
                env[name] = ""
        url = env.get("JUPYTERHUB_SERVICE_URL")
        if url:
            env["JUPYTERHUB_SERVICE_URL"] = url.replace("0.0.0.0", self.ip)
        return env

    def argv(self, container, image, env):
        command = container.get("command") or None
        args = container.get("args")
        if command is None:
            command = list(image.get("entrypoint") or [])
            if args is None:
                args = list(image.get("cmd") or [])
        argv = [expand(a, env) for a in list(command) + list(args or [])]
        if not argv:
            raise PodError("CreateContainerConfigError", "no command: the container has no command or args "
                           "and its image has no entrypoint in the images file")
        out = []
        for i, arg in enumerate(argv):
            if re.fullmatch(r"--([\w.]+\.)?ip=0\.0\.0\.0", arg):
                arg = arg.replace("0.0.0.0", self.ip)
            elif arg == "0.0.0.0" and i and re.fullmatch(r"--([\w.]+\.)?ip", argv[i - 1]):
                arg = self.ip
            out.append(arg)
        return out

    def volumes(self, groups):
        """Make each volume's content; returns {name: host path}."""
        paths = {}
        fs_group = (self.pod["spec"].get("securityContext") or {}).get("fsGroup")
        vol_root = os.path.join(self.dir, "volumes")
        for volume in self.pod["spec"].get("volumes") or []:
            name = volume["name"]
            target = os.path.join(vol_root, name)
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                pvc = self.api.request("GET", f"/api/v1/namespaces/{self.ns}/persistentvolumeclaims/{claim}",
                                       ok_missing=True)
                if not pvc or not pvc["spec"].get("volumeName") or pvc.get("status", {}).get("phase") != "Bound":
                    raise PodError("ContainerCreating", f'persistentvolumeclaim "{claim}" is not bound')
                pv = self.api.request("GET", f"/api/v1/persistentvolumes/{pvc['spec']['volumeName']}")
                host = (pv["spec"].get("hostPath") or pv["spec"].get("local") or {}).get("path")
                if not host:
                    raise PodError("ContainerCreating", f"volume {pv['metadata']['name']} is not a hostPath volume")
                paths[name] = host
            elif "hostPath" in volume:
                host = volume["hostPath"]["path"]
                kind = volume["hostPath"].get("type", "")
                if kind == "DirectoryOrCreate":
                    os.makedirs(host, mode=0o755, exist_ok=True)
                elif kind == "FileOrCreate" and not os.path.exists(host):
                    open(host, "a").close()
                if not os.path.exists(host):
                    raise PodError("ContainerCreating", f"hostPath {host} does not exist")
                paths[name] = host
            elif "emptyDir" in volume:
                if not os.path.isdir(target):
                    os.makedirs(target)
                os.chmod(target, 0o777)
                paths[name] = target
            elif "secret" in volume or "configMap" in volume or "projected" in volume:
                files = {}
                if "projected" in volume:
                    sources = volume["projected"].get("sources") or []
                    mode = volume["projected"].get("defaultMode", 0o644)
                else:
                    sources = [volume]
                    mode = (volume.get("secret") or volume.get("configMap")).get("defaultMode", 0o644)
                for source in sources:
                    if "secret" in source or "configMap" in source:
                        kind = "Secret" if "secret" in source else "ConfigMap"
                        ref = source.get("secret") or source.get("configMap")
                        ref_name = ref.get("secretName") or ref.get("name")
                        data = self.get_object(kind, ref_name, ref.get("optional", False))
                        items = ref.get("items")
                        if items:
                            for item in items:
                                if item["key"] in data:
                                    files[item["path"]] = (data[item["key"]], item.get("mode", mode))
                        else:
                            for key, value in data.items():
                                files[key] = (value, mode)
                    elif "serviceAccountToken" in source:
                        sat = source["serviceAccountToken"]
                        sa = self.pod["spec"].get("serviceAccountName", "default")
                        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {
                            "audiences": [sat["audience"]] if sat.get("audience") else None,
                            "expirationSeconds": sat.get("expirationSeconds", 3600),
                            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.name, "uid": self.uid}}}
                        token = self.api.request(
                            "POST", f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa}/token", request)
                        files[sat["path"]] = (token["status"]["token"].encode(), mode)
                    elif "downwardAPI" in source:
                        for item in source["downwardAPI"].get("items") or []:
                            if "fieldRef" in item:
                                files[item["path"]] = (str(self.field(item["fieldRef"])).encode(), mode)
                shutil.rmtree(target, ignore_errors=True)
                os.makedirs(target)
                os.chmod(target, 0o755)
                for rel, (content, file_mode) in files.items():
                    path = os.path.join(target, rel)
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    with open(path, "wb") as f:
                        f.write(content)
                    os.chmod(path, file_mode)
                    if fs_group is not None:
                        os.chown(path, 0, fs_group)
                paths[name] = target
            else:
                kinds = [k for k in volume if k != "name"]
                raise PodError("ContainerCreating",
                               f"volume {name}: {', '.join(kinds)} volumes are not supported by the test node")
        return paths

    def mounts(self, container, paths):
        mounts = []
        for vm in container.get("volumeMounts") or []:
            if vm["name"] not in paths:
                raise PodError("CreateContainerConfigError", f'volume "{vm["name"]}" not found in the pod')
            source = paths[vm["name"]]
            if vm.get("subPath"):
                source = os.path.join(source, vm["subPath"])
                if not os.path.exists(source):
                    os.makedirs(source, mode=0o777, exist_ok=True)
            mounts.append({"source": source, "target": vm["mountPath"], "readOnly": bool(vm.get("readOnly"))})
        mounts.sort(key=lambda m: m["target"].rstrip("/").count("/"))
        return mounts

    def spec_for(self, container, paths):
        uid, gid, groups = self.security(container)
        image = self.image(container)
        env = self.environment(container, image, uid)
        return {
            "argv": self.argv(container, image, env), "env": env, "uid": uid, "gid": gid, "groups": groups,
            "cwd": container.get("workingDir") or image.get("workdir") or "/",
            "mounts": self.mounts(container, paths),
            "log": os.path.join(self.dir, f"{container['name']}.log"),
        }

    # -- status
    def container_status(self, container, init=False):
        st = self.state.get(container["name"], {})
        status = {"name": container["name"], "image": container.get("image", ""),
                  "imageID": f"sg-images://{image_name(container.get('image', ''))}",
                  "restartCount": st.get("restarts", 0), "ready": False, "started": False}
        run = st.get("run")
        if run is not None:
            status["containerID"] = f"sg-node://{os.path.basename(run.dir)}"
            started = run.started or {}
            exited = run.exited
            if exited:
                reason = "Completed" if exited["exitCode"] == 0 else "Error"
                status["state"] = {"terminated": {"exitCode": exited["exitCode"], "reason": reason,
                                                  "startedAt": started.get("startedAt"),
                                                  "finishedAt": exited["finishedAt"],
                                                  "containerID": status["containerID"]}}
                if exited.get("signal"):
                    status["state"]["terminated"]["signal"] = exited["signal"]
            else:
                status["state"] = {"running": {"startedAt": started.get("startedAt", now())}}
                status["ready"] = not init
                status["started"] = True
        if st.get("waiting"):
            if "state" in status and "terminated" in status["state"]:
                status["lastState"] = status["state"]
            status["state"] = {"waiting": st["waiting"]}
            status["ready"] = False
            status["started"] = False
        elif st.get("last"):
            status["lastState"] = st["last"]
        if "state" not in status:
            status["state"] = {"waiting": {"reason": "ContainerCreating"}}
        return status

    def report(self):
        spec = self.pod["spec"]
        containers = [self.container_status(c) for c in spec["containers"]]
        inits = [self.container_status(c, init=True) for c in spec.get("initContainers") or []]
        all_ready = all(c["ready"] for c in containers) and self.phase == "Running"
        init_done = all("terminated" in c["state"] and c["state"]["terminated"]["exitCode"] == 0 for c in inits)
        conds = []
        stamp = now()
        previous = {c["type"]: c for c in (self.pod.get("status") or {}).get("conditions") or []}

        def cond(type_, ok, reason=None):
            status = "True" if ok else "False"
            old = previous.get(type_)
            entry = {"type": type_, "status": status,
                     "lastTransitionTime": old["lastTransitionTime"] if old and old.get("status") == status else stamp,
                     "lastProbeTime": None}
            if reason and not ok:
                entry["reason"] = reason
            conds.append(entry)

        cond("Initialized", init_done, "ContainersNotInitialized")
        cond("Ready", all_ready, "ContainersNotReady")
        cond("ContainersReady", all_ready, "ContainersNotReady")
        status = {"phase": self.phase, "hostIP": "127.0.0.1", "conditions": conds,
                  "containerStatuses": containers}
        if inits:
            status["initContainerStatuses"] = inits
        if self.ip:
            status["podIP"] = self.ip
            status["podIPs"] = [{"ip": self.ip}]
        if self.started_at:
            status["startTime"] = self.started_at
        if self.phase_reason:
            status["reason"] = self.phase_reason
            status["message"] = self.phase_message
        comparable = json.dumps(status, sort_keys=True, default=str)
        comparable = re.sub(r'"lastTransitionTime": "[^"]*"', "", comparable)
        if comparable == self.sent or self.gone:
            return
        try:
            self.pod = self.api.request("PATCH", f"{self.path}/status", {"status": status},
                                        content_type="application/strategic-merge-patch+json")
            self.sent = comparable
        except ApiError as e:
            if e.status == 404:
                self.gone = True
            else:
                log.warning("status of %s/%s: %s", self.ns, self.name, e)
        except OSError as e:
            log.warning("status of %s/%s: %s", self.ns, self.name, e)

    # -- the life of the pod
    def runs_dir(self, name, restarts):
        return os.path.join(self.dir, "runs", f"{name}-{restarts}")

    def adopt(self):
        """Containers started before the agent restarted: their run dirs."""
        runs = os.path.join(self.dir, "runs")
        if not os.path.isdir(runs):
            return
        latest = {}
        for entry in os.listdir(runs):
            name, _, n = entry.rpartition("-")
            if n.isdigit() and int(n) >= latest.get(name, -1):
                latest[name] = int(n)
        for name, n in latest.items():
            run = Run(os.path.join(runs, f"{name}-{n}"))
            if not run.alive() and not run.exited:
                write_json(os.path.join(run.dir, "exit"), {"exitCode": 137, "finishedAt": now(), "signal": 9})
            self.state[name] = {"restarts": n, "run": run}
        meta = read_json(os.path.join(self.dir, "pod.json"), {})
        self.started_at = meta.get("startTime")

    def kill(self, grace):
        runs = [st["run"] for st in self.state.values() if st.get("run") and not st["run"].exited]
        if not runs:
            return
        for run in runs:
            run.signal(signal.SIGTERM)
        deadline = time.time() + max(grace, 0)
        while time.time() < deadline and any(r.alive() for r in runs):
            time.sleep(0.1)
        for run in runs:
            if run.alive():
                run.signal(signal.SIGKILL)
        deadline = time.time() + 5
        while time.time() < deadline and any(r.alive() for r in runs):
            time.sleep(0.05)

    def finish(self):
        """The pod was deleted: end its processes, delete it for good, forget it."""
        meta = self.pod["metadata"]
        if not self.gone:
            grace = meta.get("deletionGracePeriodSeconds")
            if grace is None:
                grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
            if any(st.get("run") and not st["run"].exited for st in self.state.values()):
                for c in self.pod["spec"]["containers"]:
                    if self.state.get(c["name"], {}).get("run"):
                        self.event("Killing", f"Stopping container {c['name']}", container=c["name"])
            self.kill(grace)
            self.report()
            remove_mount_points(self.dir)
            try:
                self.api.request("DELETE", self.path, {"kind": "DeleteOptions", "apiVersion": "v1",
                                                       "gracePeriodSeconds": 0,
                                                       "preconditions": {"uid": self.uid}})
            except ApiError as e:
                if e.status not in (404, 409):
                    log.warning("delete %s/%s: %s", self.ns, self.name, e)
        else:
            self.kill(0)
        remove_mount_points(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)

    def run(self):
        try:
            self.life()
        except Exception:  # noqa: BLE001 - one pod's trouble must not end the node
            log.exception("pod %s/%s", self.ns, self.name)
        finally:
            self.node.forget(self.uid)

    def restart_allowed(self, exit_code):
        policy = self.pod["spec"].get("restartPolicy", "Always")
        return policy == "Always" or (policy == "OnFailure" and exit_code != 0)

    def life(self):
        os.makedirs(self.dir, exist_ok=True)
        write_json(os.path.join(self.dir, "pod.json"), read_json(os.path.join(self.dir, "pod.json"), None) or {
            "namespace": self.ns, "name": self.name, "startTime": now()})
        self.adopt()
        self.started_at = self.started_at or now()
        write_json(os.path.join(self.dir, "pod.json"), {"namespace": self.ns, "name": self.name,
                                                       "startTime": self.started_at})
        self.ip = self.node.agent.ips.allocate(self.dir)
        status = self.pod.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed") and not self.state:
            self.phase = status["phase"]
            self.sent = None
        spec = self.pod["spec"]
        containers = spec["containers"]
        paths = None
        backoff = {}
        deadline = spec.get("activeDeadlineSeconds")
        while True:
            if self.gone or self.pod["metadata"].get("deletionTimestamp"):
                self.finish()
                return
            if self.phase in ("Succeeded", "Failed"):
                self.report()
                self.changed.wait(5)
                self.changed.clear()
                continue
            if deadline and time.time() - parse_time(self.started_at) > deadline:
                self.kill(0)
                self.phase, self.phase_reason = "Failed", "DeadlineExceeded"
                self.phase_message = f"Pod was active on the node longer than the specified deadline ({deadline}s)"
                self.event("DeadlineExceeded", self.phase_message, "Warning")
                continue
            if paths is None:
                try:
                    paths = self.volumes(None)
                except PodError as e:
                    for c in containers:
                        self.state.setdefault(c["name"], {"restarts": 0})["waiting"] = {"reason": "ContainerCreating", "message": e.message}
                    self.event("FailedMount", e.message, "Warning", once=True)
                    self.report()
                    self.changed.wait(2)
                    self.changed.clear()
                    continue
                except (ApiError, OSError) as e:
                    self.event("FailedMount", str(e), "Warning", once=True)
                    self.report()
                    self.changed.wait(2)
                    self.changed.clear()
                    continue
            # init containers, one after the other, each to completion
            pending_init = False
            for c in spec.get("initContainers") or []:
                st = self.state.setdefault(c["name"], {"restarts": 0})
                run = st.get("run")
                if run is not None and run.exited and run.exited["exitCode"] == 0:
                    continue
                pending_init = True
                if run is None or (run.exited and self.restart_allowed(run.exited["exitCode"])
                                   and time.time() >= backoff.get(c["name"], 0)):
                    if run is not None:
                        st["restarts"] += 1
                    self.start_container(c, st, paths)
                elif run.exited and not self.restart_allowed(run.exited["exitCode"]):
                    self.phase = "Failed"
                break
            if not pending_init:
                for c in containers:
                    st = self.state.setdefault(c["name"], {"restarts": 0})
                    run = st.get("run")
                    if run is None:
                        if time.time() >= st.get("retry_at", 0):
                            self.start_container(c, st, paths)
                    elif run.exited:
                        code = run.exited["exitCode"]
                        if self.restart_allowed(code):
                            when = backoff.get(c["name"])
                            if when is None:
                                # the kubelet's back-off, shorter: 1, 2, 4, ... 20 seconds
                                delay = min(2 ** st["restarts"], 20)
                                backoff[c["name"]] = time.time() + delay
                                st["waiting"] = {"reason": "CrashLoopBackOff", "message":
                                                 f"back-off {delay}s restarting failed container={c['name']}"}
                                self.event("BackOff", "Back-off restarting failed container", "Warning",
                                           container=c["name"])
                            elif time.time() >= when:
                                del backoff[c["name"]]
                                st["waiting"] = None
                                st["last"] = {"terminated": {
                                    "exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                    "startedAt": (run.started or {}).get("startedAt"),
                                    "finishedAt": run.exited["finishedAt"]}}
                                st["restarts"] += 1
                                self.start_container(c, st, paths)
                runs = [self.state[c["name"]].get("run") for c in containers]
                running = [r for r in runs if r is not None and not r.exited]
                waiting = any(self.state[c["name"]].get("waiting") for c in containers)
                if running and not waiting:
                    self.phase = "Running"
                elif runs and all(r is not None and r.exited for r in runs) and not backoff and all(
                        not self.restart_allowed(r.exited["exitCode"]) for r in runs):
                    self.phase = "Succeeded" if all(r.exited["exitCode"] == 0 for r in runs) else "Failed"
                elif running:
                    self.phase = "Running"
            self.report()
            self.changed.wait(0.5)
            self.changed.clear()

    def start_container(self, container, st, paths):
        name = container["name"]
        try:
            spec = self.spec_for(container, paths)
        except PodError as e:
            if st.get("waiting") != {"reason": e.reason, "message": e.message}:
                self.event("Failed", f"Error: {e.reason}: {e.message}", "Warning", container=name, once=True)
            st["waiting"] = {"reason": e.reason, "message": e.message}
            st["retry_at"] = time.time() + 3
            return
        except (ApiError, OSError) as e:
            st["waiting"] = {"reason": "CreateContainerConfigError", "message": str(e)}
            st["retry_at"] = time.time() + 3
            return
        st["waiting"] = None
        st["run"] = start_run(self.runs_dir(name, st["restarts"]), spec)
        self.event("Started", f"Started container {name}", container=name)


# --- a node -------------------------------------------------------------------------------------

class Node:
    def __init__(self, agent, name, token):
        self.agent = agent
        self.name = name
        self.api = Api(agent.api_url, agent.ca_file, token)
        self.workers = {}
        self.lock = threading.Lock()
        self.lease = None

    def forget(self, uid):
        with self.lock:
            self.workers.pop(uid, None)

    def register(self):
        want = NODES[self.name]
        labels = dict(want["labels"], **{"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux",
                                         "kubernetes.io/arch": "amd64"})
        body = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.name, "labels": labels},
                "spec": {"taints": want["taints"]} if want["taints"] else {}}
        node = self.api.request("GET", f"/api/v1/nodes/{self.name}", ok_missing=True)
        if node is not None:
            have_taints = [{k: t.get(k) for k in ("key", "value", "effect")} for t in node["spec"].get("taints") or []
                           if not t["key"].startswith("node.kubernetes.io/")]
            have_labels = node["metadata"].get("labels") or {}
            if have_taints != want["taints"] or any(have_labels.get(k) != v for k, v in labels.items()):
                log.info("node %s: labels or taints changed: registering it again", self.name)
                self.api.request("DELETE", f"/api/v1/nodes/{self.name}")
                node = None
        if node is None:
            self.api.request("POST", "/api/v1/nodes", body)
            log.info("registered node %s", self.name)
        self.status()

    def status(self):
        cap = NODES[self.name]["capacity"]
        stamp = now()

        def cond(type_, status, reason, message):
            return {"type": type_, "status": status, "reason": reason, "message": message,
                    "lastHeartbeatTime": stamp, "lastTransitionTime": self.agent.started}

        body = {"status": {
            "capacity": cap, "allocatable": cap,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "science-gateway test node agent is posting ready status"),
            ],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": self.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": self.agent.boot_id,
                         "kernelVersion": os.uname().release, "osImage": "Science Gateway test node",
                         "containerRuntimeVersion": "sg-node://1", "kubeletVersion": "v1.20.2",
                         "kubeProxyVersion": "v1.20.2", "operatingSystem": "linux", "architecture": "amd64"},
        }}
        self.api.request("PATCH", f"/api/v1/nodes/{self.name}/status", body,
                         content_type="application/strategic-merge-patch+json")

    def renew_lease(self):
        path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
        spec = {"holderIdentity": self.name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now_micro()}
        if self.lease is None:
            self.lease = self.api.request("GET", f"{path}/{self.name}", ok_missing=True)
        if self.lease is None:
            node = self.api.request("GET", f"/api/v1/nodes/{self.name}")
            self.lease = self.api.request("POST", path, {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": "kube-node-lease", "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": node["metadata"]["uid"]}]},
                "spec": spec})
            return
        self.lease["spec"].update(spec)
        try:
            self.lease = self.api.request("PUT", f"{path}/{self.name}", self.lease)
        except ApiError:
            self.lease = None
            raise

    def heartbeat(self):
        last_status = time.time()
        while not STOP.wait(LEASE_RENEW):
            try:
                self.renew_lease()
                if time.time() - last_status >= STATUS_EVERY:
                    self.status()
                    last_status = time.time()
            except ApiError as e:
                if e.status == 404:
                    try:
                        self.register()
                    except (ApiError, OSError) as e2:
                        log.warning("node %s: %s", self.name, e2)
                else:
                    log.warning("node %s heartbeat: %s", self.name, e)
            except OSError as e:
                log.warning("node %s heartbeat: %s", self.name, e)

    def on_pod(self, kind, obj):
        if kind == "SYNC":
            seen = {p["metadata"]["uid"] for p in obj}
            for pod in obj:
                self.on_pod("MODIFIED", pod)
            with self.lock:
                stale = [w for uid, w in self.workers.items() if uid not in seen]
            for worker in stale:
                worker.deleted()
            self.agent.orphans(self, seen)
            return
        uid = obj["metadata"]["uid"]
        with self.lock:
            worker = self.workers.get(uid)
            if kind == "DELETED":
                if worker:
                    worker.deleted()
                else:
                    shutil.rmtree(os.path.join(self.agent.pods_dir, uid), ignore_errors=True)
                return
            if worker is None:
                if obj.get("status", {}).get("phase") in ("Succeeded", "Failed") and \
                        not os.path.isdir(os.path.join(self.agent.pods_dir, uid)) and \
                        not obj["metadata"].get("deletionTimestamp"):
                    return   # finished before the agent restarted: nothing to do
                worker = self.workers[uid] = PodWorker(self, obj)
                worker.start()
            else:
                worker.update(obj)

    def run(self):
        while not STOP.is_set():
            try:
                self.register()
                break
            except (ApiError, OSError) as e:
                log.warning("node %s: registering: %s", self.name, e)
                STOP.wait(2)
        self.renew_lease()
        threading.Thread(target=self.heartbeat, daemon=True, name=f"heartbeat-{self.name}").start()
        threading.Thread(target=informer, daemon=True, name=f"pods-{self.name}", args=(
            self.api, "/api/v1/pods", {"fieldSelector": f"spec.nodeName={self.name}"}, self.on_pod,
            f"pods of {self.name}")).start()


# --- the sg-local provisioner -------------------------------------------------------------------

class Provisioner:
    def __init__(self, agent, token):
        self.agent = agent
        self.api = Api(agent.api_url, agent.ca_file, token)
        self.classes = {}

    def our_class(self, name):
        if name not in self.classes:
            sc = self.api.request("GET", f"/apis/storage.k8s.io/v1/storageclasses/{name}", ok_missing=True)
            if sc is None:
                return False
            self.classes[name] = sc.get("provisioner") == PROVISIONER
        return self.classes[name]

    def on_claim(self, kind, obj):
        if kind == "SYNC":
            for claim in obj:
                self.on_claim("MODIFIED", claim)
            return
        if kind == "DELETED":
            return
        spec = obj["spec"]
        cls = spec.get("storageClassName") or (obj["metadata"].get("annotations") or {}).get(
            "volume.beta.kubernetes.io/storage-class")
        if obj.get("status", {}).get("phase") != "Pending" or spec.get("volumeName") or not cls:
            return
        if not self.our_class(cls):
            return
        meta = obj["metadata"]
        name = f"pvc-{meta['uid']}"
        path = os.path.join(self.agent.volumes_dir, name)
        os.makedirs(path, exist_ok=True)
        os.chmod(path, 0o777)
        pv = {"apiVersion": "v1", "kind": "PersistentVolume",
              "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
                           "labels": {"science-gateway.io/claim-namespace": meta["namespace"]}},
              "spec": {"capacity": {"storage": spec.get("resources", {}).get("requests", {}).get("storage", "1Gi")},
                       "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                       "persistentVolumeReclaimPolicy": "Delete", "storageClassName": cls,
                       "volumeMode": spec.get("volumeMode", "Filesystem"),
                       "hostPath": {"path": path, "type": "Directory"},
                       "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                    "namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"]}}}
        try:
            self.api.request("POST", "/api/v1/persistentvolumes", pv)
            log.info("provisioned %s for %s/%s at %s", name, meta["namespace"], meta["name"], path)
        except ApiError as e:
            if e.status != 409:
                log.warning("provisioning %s: %s", name, e)

    def on_volume(self, kind, obj):
        if kind == "SYNC":
            for pv in obj:
                self.on_volume("MODIFIED", pv)
            return
        annotations = obj["metadata"].get("annotations") or {}
        if annotations.get("pv.kubernetes.io/provisioned-by") != PROVISIONER:
            return
        path = (obj["spec"].get("hostPath") or {}).get("path", "")
        released = obj.get("status", {}).get("phase") in ("Released", "Failed")
        if kind == "DELETED" or (released and obj["spec"].get("persistentVolumeReclaimPolicy") == "Delete"):
            if path.startswith(self.agent.volumes_dir + os.sep):
                shutil.rmtree(path, ignore_errors=True)
            if kind != "DELETED":
                try:
                    self.api.request("DELETE", f"/api/v1/persistentvolumes/{obj['metadata']['name']}")
                    log.info("deleted released volume %s", obj["metadata"]["name"])
                except ApiError as e:
                    if e.status != 404:
                        log.warning("deleting %s: %s", obj["metadata"]["name"], e)

    def run(self):
        threading.Thread(target=informer, daemon=True, name="claims", args=(
            self.api, "/api/v1/persistentvolumeclaims", {}, self.on_claim, "claims")).start()
        threading.Thread(target=informer, daemon=True, name="volumes", args=(
            self.api, "/api/v1/persistentvolumes", {}, self.on_volume, "volumes")).start()


# --- the agent ----------------------------------------------------------------------------------

class Agent:
    def __init__(self, config):
        self.api_url = config["api_url"]
        self.api_port = urllib.parse.urlsplit(self.api_url).port
        self.ca_file = config["ca_file"]
        self.images_file = config["images_file"]
        self.pods_dir = config["pods_dir"]
        self.volumes_dir = config["volumes_dir"]
        os.makedirs(self.pods_dir, exist_ok=True)
        os.makedirs(self.volumes_dir, exist_ok=True)
        self.ips = IpPool(self.pods_dir)
        self.started = now()
        self.boot_id = open("/proc/sys/kernel/random/boot_id").read().strip()
        self.nodes = [Node(self, name, token) for name, token in config["node_tokens"].items()]
        self.provisioner = Provisioner(self, config["provisioner_token"])
        self.synced = {}
        self.lock = threading.Lock()
        self.leftovers = set(os.listdir(self.pods_dir))

    def orphans(self, node, seen):
        """Once, when both nodes first listed their pods: end the processes of the pods the agent
        found on disk at its start that no node has any more (deleted while it was down)."""
        with self.lock:
            if self.leftovers is None:
                return
            self.synced[node.name] = seen
            if len(self.synced) < len(self.nodes):
                return
            known = set().union(*self.synced.values())
            leftovers, self.leftovers = self.leftovers, None
        for uid in leftovers:
            if uid not in known and os.path.isdir(os.path.join(self.pods_dir, uid)):
                kill_pod_dir(os.path.join(self.pods_dir, uid))
                remove_mount_points(os.path.join(self.pods_dir, uid))
                shutil.rmtree(os.path.join(self.pods_dir, uid), ignore_errors=True)
                log.info("removed the leftovers of pod %s", uid)

    def run(self):
        for node in self.nodes:
            node.run()
        self.provisioner.run()
        log.info("node agent running: %s", ", ".join(n.name for n in self.nodes))
        STOP.wait()


def pod_runs(pod_dir):
    runs = os.path.join(pod_dir, "runs")
    if os.path.isdir(runs):
        for entry in os.listdir(runs):
            yield Run(os.path.join(runs, entry))


def remove_mount_points(pod_dir):
    """The empty directories and files a pod's mounts made on the host, newest first."""
    made = set()
    for run in pod_runs(pod_dir):
        made.update(read_json(os.path.join(run.dir, "created.json"), []) or [])
    if not made:
        return
    # removing a directory that is a mount point in another pod's namespace would unmount it
    # there: keep those another pod mounts on (or under)
    in_use = set()
    pods_dir = os.path.dirname(pod_dir.rstrip("/"))
    for other in os.listdir(pods_dir):
        if os.path.join(pods_dir, other) == pod_dir.rstrip("/"):
            continue
        for run in pod_runs(os.path.join(pods_dir, other)):
            for mount in (read_json(os.path.join(run.dir, "spec.json"), {}) or {}).get("mounts", []):
                in_use.add(mount["target"].rstrip("/"))
    for path in sorted(made, key=len, reverse=True):
        if any(t == path or t.startswith(path + "/") for t in in_use):
            continue
        try:
            if os.path.isdir(path):
                os.rmdir(path)
            elif os.path.getsize(path) == 0:
                os.remove(path)
        except OSError:
            pass   # in use by another pod, or not empty: left as it is


def kill_pod_dir(pod_dir, grace=3):
    runs = [r for r in pod_runs(pod_dir) if r.alive()]
    for run in runs:
        run.signal(signal.SIGTERM)
    deadline = time.time() + grace
    while time.time() < deadline and any(r.alive() for r in runs):
        time.sleep(0.1)
    for run in runs:
        if run.alive():
            run.signal(signal.SIGKILL)


def kill_all(config):
    pods_dir = config["pods_dir"]
    if not os.path.isdir(pods_dir):
        return
    threads = [threading.Thread(target=kill_pod_dir, args=(os.path.join(pods_dir, uid),))
               for uid in os.listdir(pods_dir)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main(argv):
    if len(argv) == 3 and argv[1] == "--supervise":
        supervise(argv[2])
        return
    if len(argv) == 3 and argv[1] == "--exec":
        exec_container(argv[2])
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s: %(message)s")
    if len(argv) == 3 and argv[1] == "--kill-all":
        kill_all(read_json(argv[2]))
        return
    if len(argv) != 2:
        sys.exit(__doc__)
    if os.geteuid() != 0:
        sys.exit("the node agent runs as root (it starts each pod as the pod's user)")
    os.umask(0o022)
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    signal.signal(signal.SIGINT, lambda *_: STOP.set())
    Agent(read_json(argv[1])).run()


if __name__ == "__main__":
    main(sys.argv)
