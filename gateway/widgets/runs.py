"""A notebook-run launcher: a notebook or a published pipeline as a batch job, watched and cancelled.

One line in a cell::

    from science_gateway.widgets import NotebookRunner
    NotebookRunner()

Pick *Notebook* (a path, its parameters as JSON, optionally one input per line: a job array) or one
of the pipelines the admins published for your groups (a dataset and the declared parameters),
press *Run*; the runs below show their state and progress (executed cells / cells), a *Cancel*
button and a link that opens the executed notebook in JupyterLab. A view over
:mod:`science_gateway.jobs`: what the widget does a script can do too. The pure part (parsing
the fields, what a row says) is in the functions at the top, tested without a browser.
"""

from __future__ import annotations

import html
import json
import os
import threading
from urllib.parse import quote

import ipywidgets as w

from .state import error_text

NOTEBOOK = "Notebook (path and parameters)"


def parse_parameters(text: str) -> dict:
    """The parameters field: a JSON object (empty: none)."""
    text = (text or "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise ValueError(f"the parameters are not JSON ({e.msg}): write them like {{\"threshold\": 0.5}}") from None
    if not isinstance(value, dict):
        raise ValueError("the parameters must be a JSON object like {\"threshold\": 0.5}")
    return value


def parse_inputs(text: str) -> list[str] | None:
    """The inputs field: one input per line (none: a single job)."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines or None


def run_row(status: dict, base_url: str = "/") -> dict:
    """What one run's row shows (pure): words, the bar, links to the executed notebooks."""
    tasks = status.get("tasks", [])
    done = sum(1 for t in tasks if t["state"] in ("COMPLETED", "FAILED", "CANCELLED"))
    words = f"{status['state'].lower()}: {done}/{len(tasks)} task{'s' if len(tasks) != 1 else ''} ended"
    failed = [f"task {t['task']}: {t['state'].lower()} {t['reason']}".strip() for t in tasks
              if t["state"] in ("FAILED", "CANCELLED")]
    links = [(t["task"], f"{base_url.rstrip('/')}/lab/tree/{quote(t['output_path'])}") for t in tasks
             if t["cells"] and not os.path.isabs(t["output_path"])]
    style = {"COMPLETED": "success", "FAILED": "danger", "CANCELLED": "warning"}.get(status["state"], "info")
    return {"words": words, "progress": status.get("progress", 0.0), "bar_style": style, "failed": failed,
            "links": links, "can_cancel": status["state"] in ("PENDING", "RUNNING", "UNKNOWN")}


class NotebookRunner(w.VBox):
    """Run a notebook or a pipeline as a batch job; the runs below with state, progress, Cancel and links."""

    def __init__(self, environ=None, interval: float = 5.0, autostart: bool = True, max_runs: int = 10, **kwargs):
        from .. import jobs as api

        self._api = api
        self._environ = environ
        self.interval = interval
        self.max_runs = max_runs
        self.error = w.HTML()
        try:
            self.pipelines = api.pipelines(environ)
        except Exception as e:  # unreadable settings: say so, keep the notebook mode
            self.pipelines = {}
            self.error.value = _error_html(error_text(e))
        self.what = w.Dropdown(options=[NOTEBOOK, *self.pipelines], description="Run")
        self.notebook = w.Text(placeholder="analysis.ipynb (relative to your home)", description="Notebook")
        self.dataset = w.Text(placeholder="scope:name", description="Dataset")
        self.parameters = w.Textarea(placeholder='{"threshold": 0.5}', description="Parameters")
        self.inputs = w.Textarea(placeholder="one input per line: a job array, one task each", description="Inputs")
        self.about = w.HTML()
        self.run_button = w.Button(description="Run", icon="play", button_style="primary")
        self.run_button.on_click(lambda _: self.submit())
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.runs_box = w.VBox()
        self.what.observe(lambda _: self._show_mode(), names="value")
        super().__init__(children=[self.what, self.about, self.notebook, self.dataset, self.parameters, self.inputs,
                                   w.HBox([self.run_button, self.refresh_button]), self.error, self.runs_box], **kwargs)
        self.add_class("sg-notebook-runner")
        self._stop = threading.Event()
        self._thread = None
        self._show_mode()
        self.refresh()
        if autostart:
            self._thread = threading.Thread(target=self._loop, name="sg-notebook-runner", daemon=True)
            self._thread.start()

    def _show_mode(self):
        pipeline = self.pipelines.get(self.what.value)
        self.notebook.layout.display = "none" if pipeline else ""
        self.dataset.layout.display = "" if pipeline else "none"
        if pipeline:
            params = ", ".join(f"{n} ({p['type']}{', required' if p['required'] else ''})"
                               for n, p in pipeline["parameters"].items() if n != pipeline["dataset_parameter"])
            self.about.value = (f"<i>{html.escape(pipeline['description'])}</i>"
                                + (f"<br>Parameters: {html.escape(params)}" if params else ""))
            self.inputs.placeholder = "more datasets, one per line: a job array, one task each"
        else:
            self.about.value = ""
            self.inputs.placeholder = "one input per line: a job array, one task each"

    def submit(self):
        """Submit what the fields say; an error shows in the widget (nothing is submitted)."""
        try:
            parameters = parse_parameters(self.parameters.value)
            inputs = parse_inputs(self.inputs.value)
            if self.what.value in self.pipelines:
                datasets = [d for d in [self.dataset.value.strip()] + (inputs or []) if d]
                if len(datasets) > 1:
                    run = self._api.launch(self.what.value, datasets=datasets, environ=self._environ, **parameters)
                else:
                    run = self._api.launch(self.what.value, datasets[0] if datasets else None, environ=self._environ,
                                           **parameters)
            else:
                run = self._api.submit(self.notebook.value.strip(), parameters, inputs=inputs, environ=self._environ)
        except Exception as e:
            self.error.value = _error_html(error_text(e))
            return None
        self.error.value = ""
        self.refresh()
        return run

    def refresh(self):
        try:
            runs = self._api.runs(self._environ)[: self.max_runs]
            rows = [self._row(run, run.status()) for run in runs]
        except Exception as e:
            self.error.value = _error_html(error_text(e))
            return
        self.runs_box.children = rows

    def _row(self, run, status):
        view = run_row(status, os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/"))
        title = w.HTML(f"<b>{html.escape(run.id)}</b> {html.escape(os.path.basename(run.record['notebook']))} "
                       f"(job {html.escape(run.job_id)}): <span class='sg-state'>{html.escape(view['words'])}</span>")
        bar = w.FloatProgress(value=view["progress"], min=0, max=1, bar_style=view["bar_style"],
                              layout=w.Layout(width="30%"))
        cancel = w.Button(description="Cancel", icon="times", disabled=not view["can_cancel"])
        cancel.on_click(lambda _: self._cancel(run))
        links = w.HTML(" ".join(f"<a href='{html.escape(url)}' target='_blank'>task {task}</a>"
                                for task, url in view["links"]))
        failed = w.HTML("<br>".join(html.escape(f) for f in view["failed"]))
        return w.VBox([w.HBox([title, bar, cancel]), links, failed])

    def _cancel(self, run):
        try:
            run.cancel()
        except Exception as e:
            self.error.value = _error_html(error_text(e))
        self.refresh()

    def _loop(self):
        while not self._stop.wait(self.interval):
            self.refresh()

    def close(self):
        self._stop.set()
        super().close()


def _error_html(message: str) -> str:
    return f'<div class="sg-error" style="color:#b00020">&#9888; {html.escape(message)}</div>' if message else ""
