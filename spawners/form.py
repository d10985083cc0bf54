"""The resource form: HTML built from what the policy allows, and the form/query parsers.

Pure functions: :func:`render_form` takes the user's :class:`Choices` and the request to show first
(the user's last one, when it is still allowed) and returns the HTML JupyterHub puts in its spawn
page; only allowed partitions and accounts appear, and the number inputs carry each partition's
limits. With Slurm accounting on, each account shows what is left of its allocation (a spent or
unassociated one is listed, disabled, with the reason) and the user's own usage is shown beside the
choice. :func:`options_from_form_data` turns posted form fields or spawn-URL query arguments into a
``user_options`` dict; it does not validate (the spawner validates every ``user_options`` against
the policy, wherever they came from).
"""

from __future__ import annotations

import json
from html import escape

from ..core.policy import Choices, ResourceRequest

#: form fields JupyterHub adds that are not user options
_RESERVED = {"_xsrf"}


def options_from_form_data(form_data: dict) -> dict:
    """``{key: [value, ...]}`` (form posts, query arguments) -> ``{key: value}``.

    Unknown keys are kept, so validation can refuse them with a clear message; a key given
    several times keeps all values (a list), which validation refuses too.
    """
    options = {}
    for key, values in form_data.items():
        if key in _RESERVED:
            continue
        if isinstance(values, (list, tuple)):
            options[key] = values[0] if len(values) == 1 else list(values)
        else:
            options[key] = values
    return options


def _number(name: str, label: str, value: int, low: int, high: int, unit: str = "") -> str:
    return (
        f'<div class="form-group mb-3">'
        f'<label for="sg-{name}" class="form-label">{escape(label)}</label>'
        f'<input type="number" class="form-control" id="sg-{name}" name="{name}" '
        f'value="{value}" min="{low}" max="{high}" step="1" required>'
        f'<small class="form-text text-muted" id="sg-{name}-help">{low} to {high}{escape(unit)}</small>'
        f"</div>"
    )


def form_fields(choices: Choices) -> tuple[str, ...]:
    """The fields :func:`render_form` shows for ``choices``: GPUs only where a partition has
    some, the account only where the user may charge one."""
    fields = ["partition", "cores", "memory_gb"]
    if any(p.max_gpus for p in choices.partitions.values()):
        fields.append("gpus")
    fields.append("walltime_hours")
    if choices.accounts:
        fields.append("account")
    return tuple(fields)


def _usage_line(usage: dict) -> str:
    totals = usage["totals"]
    parts = [f"notebooks {totals['notebook']['core_hours']:g}", f"Dask workers {totals['dask']['core_hours']:g}"]
    if totals["other"]["jobs"]:
        parts.append(f"other jobs {totals['other']['core_hours']:g}")
    gpu = totals["all"]["gpu_hours"]
    text = f"Your usage since {usage['since']}: {', '.join(parts)} core-hours"
    text += f", {gpu:g} GPU-hours" if gpu else ""
    return escape(text + f" (as of {usage['as_of']})")


def render_form(choices: Choices, current: ResourceRequest, allocations=None, usage=None) -> str:
    """The spawn form for ``choices``, with ``current`` selected; ``allocations``
    (``{account: AllocationStatus}``) and ``usage`` (a snapshot's ``user_usage`` plus ``since`` and
    ``as_of``) come from Slurm accounting, when it is on."""
    allocations = allocations or {}
    limits = {name: lim.as_dict() for name, lim in choices.partitions.items()}
    lim = choices.partitions[current.partition]
    options = "".join(
        f'<option value="{escape(name)}"{" selected" if name == current.partition else ""}>{escape(name)}</option>'
        for name in choices.partitions
    )
    parts = [
        '<div class="sg-resource-form">',
        '<div class="form-group mb-3"><label for="sg-partition" class="form-label">Partition</label>'
        f'<select class="form-select form-control" id="sg-partition" name="partition">{options}</select></div>',
        _number("cores", "CPU cores", current.cores, 1, lim.max_cores),
        _number("memory_gb", "Memory (GiB)", current.memory_gb, 1, lim.max_memory_gb, " GiB"),
    ]
    fields = form_fields(choices)
    if "gpus" in fields:
        parts.append(_number("gpus", "GPUs", current.gpus, 0, lim.max_gpus))
    parts.append(_number("walltime_hours", "Walltime (hours)", current.walltime_hours, 1, lim.max_walltime_hours, " h"))
    if "account" in fields:
        options_html = []
        for a in choices.accounts:
            status = allocations.get(a)
            refused = bool(status is not None and status.refusal())
            label = f"{a}: {status.describe()}" if status is not None else a
            flags = (" selected" if a == current.account and not refused else "") + (" disabled" if refused else "")
            options_html.append(f'<option value="{escape(a)}"{flags}>{escape(label)}</option>')
        help_html = ""
        if usage is not None:
            help_html = f'<small class="form-text text-muted" id="sg-usage">{_usage_line(usage)}</small>'
        parts.append(
            '<div class="form-group mb-3"><label for="sg-account" class="form-label">Account to charge</label>'
            f'<select class="form-select form-control" id="sg-account" name="account">{"".join(options_html)}</select>'
            f"{help_html}</div>"
        )
    # Keep the number inputs' limits in step with the chosen partition (the server checks anyway).
    limits_json = json.dumps(limits).replace("</", "<\\/")  # names are policy-checked [A-Za-z0-9_.-]
    parts.append(
        "<script>(function(){var L=" + limits_json + ";"
        "var p=document.getElementById('sg-partition');"
        "function upd(){var l=L[p.value];if(!l)return;"
        "[['cores','max_cores',''],['memory_gb','max_memory_gb',' GiB'],['gpus','max_gpus',''],"
        "['walltime_hours','max_walltime_hours',' h']].forEach(function(f){"
        "var i=document.getElementById('sg-'+f[0]);if(!i)return;i.max=l[f[1]];"
        "if(+i.value>l[f[1]])i.value=l[f[1]];"
        "var h=document.getElementById('sg-'+f[0]+'-help');if(h)h.textContent=i.min+' to '+l[f[1]]+f[2];});}"
        "p.addEventListener('change',upd);})();</script>"
    )
    parts.append("</div>")
    return "\n".join(parts)
