"""Run code in a kernel of a user's server behind the hub, as JupyterLab does (REST + websocket).

A logged-in :class:`sgtest.hub.HubSession` (its cookies), or an API token with access to the server
(``token=``, e.g. the server's own), authenticates both the REST calls and the kernel's websocket;
tornado's websocket client speaks the Jupyter messaging protocol's JSON form. Only what the tests
need: start a kernel, execute code and collect stdout/errors.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timezone

from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect


class KernelError(RuntimeError):
    """The code raised in the kernel; the message holds the kernel's traceback."""


class RemoteKernel:
    def __init__(self, session, username: str, *, hub_url: str | None = None, token: str | None = None):
        """``session`` (a logged-in HubSession), or ``hub_url`` and ``token`` with ``session=None``."""
        import requests

        self.http = session.http if session is not None else requests.Session()
        self.token = token
        self.base = f"{hub_url or session.hub.url}/user/{username}"
        self.path = f"/user/{username}"
        self.kernel_id = None

    def _headers(self) -> dict:
        if self.token:
            return {"Authorization": f"token {self.token}"}
        xsrf = self.http.cookies.get("_xsrf", path=self.path + "/") or self.http.cookies.get("_xsrf")
        return {"X-XSRFToken": xsrf} if xsrf else {}

    def start(self) -> str:
        if not self.token:  # a page load sets the server's _xsrf cookie
            self.http.get(f"{self.base}/lab", timeout=30)
        r = self.http.post(f"{self.base}/api/kernels", json={"name": "python3"}, headers=self._headers(),
                           timeout=60)
        r.raise_for_status()
        self.kernel_id = r.json()["id"]
        return self.kernel_id

    def shutdown(self):
        r = self.http.delete(f"{self.base}/api/kernels/{self.kernel_id}", headers=self._headers(), timeout=60)
        assert r.status_code in (204, 404), r.text

    def exists(self) -> bool:
        r = self.http.get(f"{self.base}/api/kernels/{self.kernel_id}", headers=self._headers(), timeout=30)
        return r.status_code == 200

    async def execute(self, code: str, timeout: float = 180) -> str:
        """Run ``code``; return its stdout, or raise :class:`KernelError` with the traceback."""
        cookies = "; ".join(f"{c.name}={c.value}" for c in self.http.cookies)
        url = self.base.replace("http://", "ws://") + f"/api/kernels/{self.kernel_id}/channels"
        headers = {**({"Cookie": cookies} if cookies else {}), **self._headers()}
        conn = await websocket_connect(HTTPRequest(url, headers=headers, connect_timeout=30))
        msg_id = uuid.uuid4().hex
        conn.write_message(json.dumps({
            "header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex,
                       "msg_type": "execute_request", "version": "5.3",
                       "date": datetime.now(timezone.utc).isoformat()},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }))
        out, error, replied, idle = [], None, False, False
        try:
            async with asyncio.timeout(timeout):
                while not (replied and idle):
                    raw = await conn.read_message()
                    if raw is None:
                        raise KernelError(f"the kernel's websocket closed; output so far: {''.join(out)}")
                    msg = json.loads(raw)
                    if msg.get("parent_header", {}).get("msg_id") != msg_id:
                        continue
                    kind = msg["msg_type"]
                    if kind == "stream":
                        out.append(msg["content"]["text"])
                    elif kind == "error":
                        error = "\n".join(msg["content"]["traceback"])
                    elif kind == "execute_reply":
                        replied = True
                    elif kind == "status" and msg["content"]["execution_state"] == "idle":
                        idle = True
        finally:
            conn.close()
            # wait for the server's close frame: the socket is closed then, in this event loop, not
            # left to a later test's garbage collection (a ResourceWarning there)
            try:
                async with asyncio.timeout(5):
                    while await conn.read_message() is not None:
                        pass
            except (TimeoutError, asyncio.TimeoutError):
                pass
        if error:
            raise KernelError(error)
        return "".join(out)
