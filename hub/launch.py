"""``GET /hub/launch?notebook=...&dataset=...&partition=...``: a launch link (see ``core/launch.py``).

What the hub does with a link, for the logged-in user (a logged-out browser goes through the login
first and comes back here):

1. Check it: the link's syntax (:func:`~science_gateway.core.launch.parse_launch_query`) and its
   spawn choices against the user's group policy (the spawner's own check, the one every spawn
   passes). A refused link is a 400 page that says why; nothing is started or stored.
2. Spawn, unless the user's server runs already (then the link's choices are not applied, the
   server is used as it is) or is starting (the browser waits on JupyterHub's pending page):
   a link that makes every choice the spawn form offers spawns at once (JupyterHub's spawn URL
   with ``opt-`` arguments); one that makes some or none shows the spawn form with the link's
   choices selected, and the user picks the rest.
3. Send the browser on to ``/user/NAME/gateway/launch?notebook=...&dataset=...`` (JupyterHub's
   ``next``, kept through the spawn), where the user's own server copies the notebook, stages the
   data and opens JupyterLab.

The hub keeps nothing from the link: the choices travel in the URL, and JupyterHub's own spawn
handlers check them again when they spawn.
"""

from __future__ import annotations

from urllib.parse import urlencode

from jupyterhub.handlers.base import BaseHandler
from jupyterhub.utils import url_path_join
from tornado import web

from ..core.launch import LaunchError, parse_launch_query

#: the longest launch URL read (a link holds a path, a dataset id and a few choices)
MAX_LINK_LENGTH = 4096


def refused(reason: str) -> web.HTTPError:
    # JupyterHub's error page shows the HTTP reason as its heading and the message below it
    return web.HTTPError(400, f"This launch link is refused: {reason}. Ask whoever published it for a corrected one.",
                         reason="Launch link refused")


class LaunchHandler(BaseHandler):
    """The hub's end of a launch link (see the module docstring)."""

    def check_xsrf_cookie(self):
        pass  # a GET that a link opens; it changes nothing the link did not ask for

    @web.authenticated
    async def get(self):
        user = self.current_user
        if len(self.request.uri) > MAX_LINK_LENGTH:
            raise refused(f"it is {len(self.request.uri)} characters long, at most {MAX_LINK_LENGTH} are read")
        query = {k: [v.decode("utf-8", "replace") for v in vs] for k, vs in self.request.query_arguments.items()}
        try:
            link = parse_launch_query(query)
        except LaunchError as e:
            raise refused(str(e)) from None
        spawner = user.get_spawner("", replace_failed=True)
        await self.check_choices(spawner, link.options)

        onward = url_path_join(user.server_url(""), "gateway/launch") + "?" + urlencode(link.link_query())
        if spawner.ready:
            self.log.info("Launch link for %s: server running, opening %s", user.name, link.notebook)
            return self.redirect(onward)
        if spawner.active:
            pending = url_path_join(self.hub.base_url, "spawn-pending", user.escaped_name)
            return self.redirect(pending + "?" + urlencode({"next": onward}))
        spawn = url_path_join(self.hub.base_url, "spawn", user.escaped_name)
        form_fields = getattr(spawner, "form_fields", None)
        fields = form_fields() if form_fields is not None else ()
        if not fields or set(fields) <= set(link.options):
            # nothing to choose, or the link chose it all: JupyterHub's spawn URL spawns at once
            args = [(f"opt-{k}", v) for k, v in link.options.items()] + [("next", onward)]
            self.log.info("Launch link for %s: spawning with %s", user.name, sorted(link.options))
            return self.redirect(spawn + "?" + urlencode(args))
        # some choices left to the user: the spawn form, with the link's choices selected
        await spawner.run_auth_state_hook(await user.get_auth_state())
        form = spawner.render_options_form(preselect=link.options)
        chosen = ", ".join(f"{k} {v}" for k, v in link.options.items())
        note = (
            '<p class="sg-launch-note alert alert-info">This launch link opens '
            f"<code>{web.escape.xhtml_escape(link.notebook)}</code>"
            + (f" on the dataset <code>{web.escape.xhtml_escape(link.dataset)}</code>" if link.dataset else "")
            + (f"; it chose {web.escape.xhtml_escape(chosen)}" if chosen else "")
            + ". Choose the rest and press Start.</p>"
        )
        html = await self.render_template(
            "spawn.html",
            for_user=user,
            auth_state=None,
            spawner_options_form=note + form,
            error_message=None,
            html_error_message=None,
            url=spawn + "?" + urlencode({"next": onward, "_xsrf": self.xsrf_token.decode("ascii")}),
            spawner=spawner,
        )
        self.finish(html)

    async def check_choices(self, spawner, options: dict) -> None:
        """The link's spawn choices through the spawner's own policy check (with the allocations
        Slurm accounting knows, when it is on), or a 400 page."""
        validate = getattr(spawner, "validated_request", None)
        refresh = getattr(spawner, "refresh_usage", None)
        if validate is not None and refresh is not None:
            await refresh()
        if validate is None:
            if options:
                raise refused(f"this gateway's servers take no spawn choices, and it makes {', '.join(sorted(options))}")
            return
        try:
            validate(options)
        except web.HTTPError as e:  # the spawner's SpawnException: the policy's message
            raise refused(str(getattr(e, "message", "") or e.log_message or e).rstrip(".")) from None
