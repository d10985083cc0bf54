"""Shared helpers for the tests against the local Kubernetes control plane.

``scripts/services/kubernetes start`` runs a real API server, controller-manager and scheduler,
and the test node agent (scripts/services/kubernetes-node/agent.py) that runs pods as local
processes; it writes its facts to ``$SG_SERVICES_DIR/kubernetes.env``. :class:`KubeCluster` reads
them (skip-or-fail when missing) and talks to the API server as the admin (system:masters) with a
small synchronous REST client.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import pwd
import secrets
import time
from pathlib import Path

import requests

from sgtest.services import missing, service_env

#: plural resource name -> (API path prefix, namespaced)
RESOURCES = {
    "pods": ("/api/v1", True),
    "events": ("/api/v1", True),
    "secrets": ("/api/v1", True),
    "configmaps": ("/api/v1", True),
    "services": ("/api/v1", True),
    "serviceaccounts": ("/api/v1", True),
    "persistentvolumeclaims": ("/api/v1", True),
    "persistentvolumes": ("/api/v1", False),
    "namespaces": ("/api/v1", False),
    "nodes": ("/api/v1", False),
    "storageclasses": ("/apis/storage.k8s.io/v1", False),
    "leases": ("/apis/coordination.k8s.io/v1", True),
    "networkpolicies": ("/apis/networking.k8s.io/v1", True),
    "roles": ("/apis/rbac.authorization.k8s.io/v1", True),
    "rolebindings": ("/apis/rbac.authorization.k8s.io/v1", True),
    "deployments": ("/apis/apps/v1", True),
}


class KubeError(Exception):
    def __init__(self, response: requests.Response):
        self.status = response.status_code
        try:
            self.body = response.json()
        except ValueError:
            self.body = {"message": response.text}
        super().__init__(f"{response.request.method} {response.url}: HTTP {self.status}: {self.body.get('message')}")


def token_of(kubeconfig: str | os.PathLike) -> str:
    """The bearer token in one of the service's kubeconfigs (they are written by the script, one
    user each, ``token: ...``)."""
    for line in Path(kubeconfig).read_text().splitlines():
        key, _, value = line.strip().partition(":")
        if key == "token":
            return value.strip()
    raise ValueError(f"no token in {kubeconfig}")


class KubeCluster:
    """The running control plane's facts and an admin REST client."""

    def __init__(self, env: dict[str, str] | None = None, kubeconfig: str | None = None):
        env = service_env("kubernetes") if env is None else env
        self.env = env
        self.url = env["KUBE_API_URL"]
        self.ca_file = env["KUBE_CA_FILE"]
        self.kubeconfig = kubeconfig or env["KUBECONFIG_ADMIN"]
        self.images_file = Path(env["KUBE_IMAGES_FILE"])
        self.audit_log = Path(env["KUBE_AUDIT_LOG"])
        self.pods_dir = Path(env["KUBE_PODS_DIR"])
        self.volumes_dir = Path(env["KUBE_VOLUMES_DIR"])
        self.nodes = env["KUBE_NODES"].split()
        self.storage_class = env["KUBE_STORAGE_CLASS"]
        self.helm = env["KUBE_HELM"]
        self.session = requests.Session()
        self.session.verify = self.ca_file
        self.session.headers["Authorization"] = f"Bearer {token_of(self.kubeconfig)}"
        try:
            r = self.request("GET", "/readyz", timeout=10)
        except requests.RequestException as e:
            missing("kubernetes", f"the API server at {self.url} does not answer: {e}")
        if r.status_code != 200:
            missing("kubernetes", f"the API server at {self.url} is not ready: HTTP {r.status_code} {r.text[:200]}")

    def as_user(self, kubeconfig: str) -> KubeCluster:
        """The same cluster, as the user of another of the service's kubeconfigs."""
        return KubeCluster(self.env, kubeconfig)

    # -- REST
    def path(self, resource: str, namespace: str | None = None, name: str | None = None) -> str:
        prefix, namespaced = RESOURCES[resource]
        path = prefix
        if namespaced and namespace:
            path += f"/namespaces/{namespace}"
        path += f"/{resource}"
        if name:
            path += f"/{name}"
        return path

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        # explicit: REQUESTS_CA_BUNDLE in the environment would win over session.verify
        kwargs.setdefault("verify", self.ca_file)
        return self.session.request(method, f"{self.url}{path}", **kwargs)

    def _json(self, r: requests.Response):
        if r.status_code >= 400:
            raise KubeError(r)
        return r.json()

    def get(self, resource: str, name: str, namespace: str | None = None) -> dict | None:
        """The object, or None when it does not exist."""
        r = self.request("GET", self.path(resource, namespace, name))
        if r.status_code == 404:
            return None
        return self._json(r)

    def list(self, resource: str, namespace: str | None = None, **params) -> list[dict]:
        """Items; params are the API's (``labelSelector``, ``fieldSelector``)."""
        return self._json(self.request("GET", self.path(resource, namespace), params=params))["items"]

    def create(self, resource: str, body: dict, namespace: str | None = None) -> dict:
        return self._json(self.request("POST", self.path(resource, namespace), json=body))

    def patch(self, resource: str, name: str, body: dict, namespace: str | None = None) -> dict:
        return self._json(self.request("PATCH", self.path(resource, namespace, name), json=body,
                                       headers={"Content-Type": "application/merge-patch+json"}))

    def delete(self, resource: str, name: str, namespace: str | None = None, grace: int | None = None) -> bool:
        """Delete; False when it did not exist."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if grace is not None:
            body["gracePeriodSeconds"] = grace
        r = self.request("DELETE", self.path(resource, namespace, name), json=body)
        if r.status_code == 404:
            return False
        self._json(r)
        return True

    def wait(self, resource: str, name: str, namespace: str | None = None, until=None, timeout: float = 60,
             what: str = "") -> dict | None:
        """Poll the object until ``until(obj)`` is true (``obj`` may be None: gone); returns it.

        Raises AssertionError with the last state seen on timeout."""
        until = until or (lambda obj: obj is not None)
        deadline = time.monotonic() + timeout
        obj = None
        while True:
            obj = self.get(resource, name, namespace)
            if until(obj):
                return obj
            if time.monotonic() > deadline:
                raise AssertionError(f"{resource}/{name} in {namespace}: not {what or 'as expected'} after "
                                     f"{timeout}s; last seen: {json.dumps((obj or {}).get('status'))[:1500]}")
            time.sleep(0.25)

    def wait_gone(self, resource: str, name: str, namespace: str | None = None, timeout: float = 60):
        self.wait(resource, name, namespace, until=lambda obj: obj is None, timeout=timeout, what="gone")

    def events(self, namespace: str, name: str | None = None, kind: str = "Pod") -> list[dict]:
        """Events of a namespace, or of one object of ``kind``."""
        selector = f"involvedObject.kind={kind}" + (f",involvedObject.name={name}" if name else "")
        return self.list("events", namespace, fieldSelector=selector)

    @contextlib.contextmanager
    def namespace(self, prefix: str = "sgtest"):
        """A new namespace with a unique name, deleted (with what is in it) afterwards."""
        name = f"{prefix}-{secrets.token_hex(3)}"
        self.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": name, "labels": {"science-gateway.io/test": "true"}}})
        # the controller-manager gives each namespace its default ServiceAccount and that its
        # token Secret; the API server refuses pods before both exist
        self.wait("serviceaccounts", "default", name, until=lambda sa: bool(sa and sa.get("secrets")),
                  timeout=30, what="created with its token")
        try:
            yield name
        finally:
            self.delete("namespaces", name)

    # -- the node agent
    def register_image(self, name: str, bin_dir: str | os.PathLike, env: dict[str, str] | None = None,
                       **extra) -> None:
        """Make image ``name`` (without tag) known to the test node: its PATH starts with bin_dir.

        ``extra`` may set ``entrypoint``, ``cmd`` (lists) and ``workdir``, like an image's config."""
        entry = {"path": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin", "env": dict(env or {}), **extra}
        self.images_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.images_file.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                images = json.loads(self.images_file.read_text() or "{}")
            except (OSError, ValueError):
                images = {}
            images[name] = entry
            tmp = self.images_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(images, indent=2))
            tmp.chmod(0o644)
            tmp.replace(self.images_file)

    def pod_log(self, pod: dict, container: str | None = None) -> str:
        """What a pod's container wrote (stdout and stderr), from the test node's pod dir."""
        container = container or pod["spec"]["containers"][0]["name"]
        path = self.pods_dir / pod["metadata"]["uid"] / f"{container}.log"
        try:
            return path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- the audit log
    def audit_events(self, username: str | None = None, since: float | datetime.datetime | None = None,
                     stage: str | None = "ResponseComplete") -> list[dict]:
        """Audit events (JSON lines at Metadata level) of ``username`` at or after ``since``
        (epoch seconds or an aware datetime), one per request at ``stage`` (None: every stage;
        watches also log ResponseStarted)."""
        if isinstance(since, (int, float)):
            since = datetime.datetime.fromtimestamp(since, datetime.timezone.utc)
        events = []
        paths = sorted(self.audit_log.parent.glob(self.audit_log.stem + "-*" + self.audit_log.suffix))
        for path in [*paths, self.audit_log]:
            try:
                if since is not None and path.stat().st_mtime < since.timestamp() - 1:
                    continue   # a rotated file that ended before ``since``
                lines = path.read_text().splitlines()
            except FileNotFoundError:
                continue
            needle = f'"username":{json.dumps(username)}' if username is not None else ""
            for line in lines:
                if needle not in line:
                    continue   # cheaper than parsing the other users' lines
                try:
                    event = json.loads(line)
                except ValueError:
                    continue   # a line being written
                if username is not None and event.get("user", {}).get("username") != username:
                    continue
                if stage is not None and event.get("stage") != stage:
                    continue
                if since is not None:
                    stamp = datetime.datetime.fromisoformat(
                        event["requestReceivedTimestamp"].replace("Z", "+00:00"))
                    if stamp < since:
                        continue
                events.append(event)
        return events


def container_state(pod: dict | None, container: str | None = None) -> dict:
    """``{"running": ...}``, ``{"terminated": ...}`` or ``{"waiting": ...}`` of a pod's container."""
    for status in (pod or {}).get("status", {}).get("containerStatuses") or []:
        if container is None or status["name"] == container:
            return status.get("state") or {}
    return {}


def pod_manifest(name: str, argv: list[str], image: str = "sg-test/shell", uid: int | str | None = "demo",
                 **spec) -> dict:
    """A one-container pod running ``argv`` as ``uid``: a number, a unix user's name (the test
    machine's ``demo`` by default, whatever uid useradd gave it) or None (no securityContext)."""
    if isinstance(uid, str):
        uid = pwd.getpwnam(uid).pw_uid
    container = {"name": "main", "image": f"{image}:1", "command": argv[:1], "args": argv[1:]}
    for key in ("env", "envFrom", "volumeMounts", "workingDir", "resources"):
        if key in spec:
            container[key] = spec.pop(key)
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [container], "restartPolicy": "Never",
                     "terminationGracePeriodSeconds": 5, **spec}}
    if uid is not None:
        body["spec"].setdefault("securityContext", {})["runAsUser"] = uid
    return body
