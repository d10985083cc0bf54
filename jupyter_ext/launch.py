"""The user's end of a launch link: ``GET {base_url}gateway/launch?notebook=...&dataset=...``.

The hub (``hub/launch.py``) sends the browser here once the user's server runs. This page, as the
user, in their own server:

1. copies the notebook from the gateway's notebook library (``GatewayExtension.launch_dir``, by
   default the installed examples) into ``launched/`` in the user's home. A copy never
   overwrites anything: the same link opened again reuses an unchanged copy, and a copy the user
   changed stays as it is (the new one gets the next free name);
2. when the link names a dataset, writes it into the copy as a parameter cell (after the cell
   tagged ``parameters``, as papermill does: ``dataset = "scope:name"``) and stages it, through
   the same call as ``POST gateway/api/requests`` (the same request when one is in flight);
3. shows the request's progress and opens the notebook in JupyterLab when the data is ready (at
   once when there is no dataset; with the failure's reasons and a link to open it anyway when
   the stage-in fails).

Errors are HTML pages saying why (a notebook the library does not hold, a dataset the catalogue
does not know), quoting at most a short prefix of the link.
"""

from __future__ import annotations

import asyncio
import json
import os
from html import escape
from urllib.parse import quote

import nbformat
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web

from ..core.launch import LINK_KEYS, LaunchError, parse_launch_query
from ..core.text import quote_prefix
from .handlers import CatalogCalls

#: the folder, in the user's home, that launched notebooks are copied into
LAUNCHED_DIR = "launched"
#: names tried for a copy before giving up (``name.ipynb``, ``name-2.ipynb``, ...)
MAX_COPIES = 100
MAX_LINK_LENGTH = 4096
PAGE_STYLE = (
    "<style>body{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em;line-height:1.5}"
    "progress{width:100%;height:1.2em} .sg-failed,.sg-error{color:#a40000}</style>"
)


def with_parameters(source: bytes, dataset: str | None) -> str:
    """The library notebook ``source`` as the user gets it: with ``dataset = "..."`` in a cell
    tagged ``injected-parameters``, after the cell tagged ``parameters`` (at the top when there
    is none). The value is a JSON string literal, which is a Python one."""
    nb = nbformat.reads(source.decode("utf-8"), as_version=4)
    if dataset:
        if nb.nbformat_minor < 5:  # cell ids: the copy is the same bytes each time the link is opened
            nb.nbformat_minor = 5
            for i, c in enumerate(nb.cells):
                c.setdefault("id", f"cell-{i}")
        cell = nbformat.v4.new_code_cell(
            f"# from the launch link\ndataset = {json.dumps(dataset)}",
            metadata={"tags": ["injected-parameters"]},
        )
        cell["id"] = "injected-parameters"
        at = next((i + 1 for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])), 0)
        nb.cells.insert(at, cell)
    return nbformat.writes(nb)


def place_copy(root: str, name: str, content: str) -> str:
    """Write ``content`` as ``launched/name`` under ``root`` (or reuse an identical copy there);
    the path relative to ``root``. Never overwrites a file."""
    folder = os.path.join(root, LAUNCHED_DIR)
    os.makedirs(folder, mode=0o755, exist_ok=True)
    stem, ext = os.path.splitext(name)
    data = content.encode("utf-8")
    for n in range(1, MAX_COPIES + 1):
        candidate = name if n == 1 else f"{stem}-{n}{ext}"
        path = os.path.join(folder, candidate)
        try:
            with open(path, "xb") as f:  # exclusive: a file that appeared meanwhile is not replaced
                f.write(data)
            return f"{LAUNCHED_DIR}/{candidate}"
        except FileExistsError:
            try:
                with open(path, "rb") as f:
                    if f.read(len(data) + 1) == data:
                        return f"{LAUNCHED_DIR}/{candidate}"
            except OSError:
                pass
    raise web.HTTPError(409, f"{LAUNCHED_DIR}/ holds {MAX_COPIES} copies of {quote_prefix(name)} already: tidy it up first")


class LaunchPageHandler(CatalogCalls, JupyterHandler):
    """``GET gateway/launch`` (see the module docstring)."""

    @web.authenticated
    @authorized
    async def get(self):
        if len(self.request.uri) > MAX_LINK_LENGTH:
            raise web.HTTPError(414, f"the launch link is {len(self.request.uri)} characters long; at most {MAX_LINK_LENGTH} are read")
        # the link's own keys only: the hub checked the rest, and the login on the way may add its own
        query = {k: [v.decode("utf-8", "replace") for v in vs] for k, vs in self.request.query_arguments.items()
                 if k in LINK_KEYS}
        try:
            link = parse_launch_query(query)
        except LaunchError as e:
            raise web.HTTPError(400, f"This launch link is refused: {e}.") from None
        source = self.library_notebook(link.notebook)
        try:
            content = with_parameters(source, link.dataset)
        except Exception:  # not a notebook nbformat reads: the library's fault, not the user's
            self.log.warning("Science Gateway: launch library notebook %s is not a readable notebook", link.notebook)
            raise web.HTTPError(500, f"the library's notebook {quote_prefix(link.notebook)} could not be read; tell the gateway admins") from None
        request = await self.start_stage(link.dataset) if link.dataset else None
        root = self.extension.serverapp.root_dir
        copy = await asyncio.get_running_loop().run_in_executor(None, place_copy, root, os.path.basename(link.notebook), content)
        lab = url_path_join(self.base_url, "lab", "tree", quote(copy))
        self.log.info("Science Gateway: launch link opened %s%s", copy, f", staging {link.dataset}" if link.dataset else "")
        if request is None or request.state == "ready":
            return self.redirect(lab)
        self.finish(self.wait_page(copy, lab, request))

    def write_error(self, status_code: int, **kwargs) -> None:
        """A page that says why, whatever the status (jupyter_server's 404 page has no message)."""
        error = kwargs.get("exc_info", (None, None))[1]
        message = getattr(error, "log_message", None) if isinstance(error, web.HTTPError) else None
        message = message or "the launch failed on this server; tell the gateway admins"
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(
            '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Launch link: error</title>'
            f"{PAGE_STYLE}</head><body><h1>The launch link did not open</h1>"
            f'<p class="sg-error" role="alert">{escape(message)}</p>'
            f'<p><a href="{escape(url_path_join(self.base_url, "lab"))}">Go to JupyterLab</a></p></body></html>'
        )

    def library_notebook(self, path: str) -> bytes:
        """The library's notebook at ``path`` (checked syntax), read only if it resolves inside
        the library (no symlink out of it); 404 saying so otherwise."""
        library = self.extension.launch_dir
        missing = web.HTTPError(
            404, f"the gateway's notebook library holds no notebook {quote_prefix(path)}; check the link with whoever published it"
        )
        if not library or not os.path.isdir(library):
            raise missing
        root = os.path.realpath(library)
        full = os.path.realpath(os.path.join(root, path))
        if os.path.commonpath([root, full]) != root or not os.path.isfile(full):
            raise missing
        with open(full, "rb") as f:
            return f.read()

    def wait_page(self, copy: str, lab: str, request) -> str:
        api = url_path_join(self.base_url, "gateway", "api", "requests", quote(request.id, safe=""))
        data = json.dumps({"api": api, "lab": lab, "xsrf": self.xsrf_token.decode("ascii")}).replace("</", "<\\/")
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Staging {escape(request.did)}</title>
{PAGE_STYLE}</head>
<body>
<h1>Opening <code>{escape(copy)}</code></h1>
<p>The launch link asked for the dataset <code>{escape(request.did)}</code>. It is being made readable
for your notebook; JupyterLab opens when it is ready (you may close this page: the request goes on,
and the notebook is in your home).</p>
<progress id="sg-progress" max="{max(request.files_total, 1)}" value="{request.files_done}"></progress>
<p id="sg-status" role="status" aria-live="polite">{escape(request.message or request.state)}</p>
<ul id="sg-failed" class="sg-failed"></ul>
<p><a id="sg-open" href="{escape(lab)}">Open the notebook now</a> (the data may not all be there yet)</p>
<script>(function(){{
var D={data};
function show(r){{
  var p=document.getElementById('sg-progress'); p.max=Math.max(r.files_total,1); p.value=r.files_done;
  document.getElementById('sg-status').textContent=(r.notice? r.notice+' ': '')+(r.message||r.state);
  var ul=document.getElementById('sg-failed'); ul.textContent='';
  (r.failed||[]).slice(0,20).forEach(function(f){{var li=document.createElement('li');li.textContent=f.did+': '+f.reason;ul.appendChild(li);}});
  if(r.state==='ready'){{ window.location.assign(D.lab); return true; }}
  if(r.state==='failed'){{ document.getElementById('sg-open').textContent='Open the notebook anyway'; return true; }}
  return false;
}}
function poll(delay){{
  setTimeout(function(){{
    fetch(D.api,{{headers:{{'X-XSRFToken':D.xsrf}},credentials:'same-origin'}})
      .then(function(res){{ if(!res.ok) throw new Error('HTTP '+res.status); return res.json(); }})
      .then(function(r){{ if(!show(r)) poll(Math.min(delay*1.5,10000)); }})
      .catch(function(e){{ document.getElementById('sg-status').textContent='Could not ask for the progress ('+e.message+'); trying again.'; poll(10000); }});
  }}, delay);
}}
poll(1000);
}})();</script>
</body></html>"""
