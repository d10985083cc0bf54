"""The admin's effective-policy report as plain data: what one user may do on this gateway.

The hub builds it (``science_gateway.hub.effective``, served at
``GET /hub/api/gateway/effective-policy/{username}``); the notebook API
(``science_gateway.admin``) reads it back from that route. Pure: no I/O, nothing of ours imported.
"""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass, field, fields


@dataclass(frozen=True)
class EffectivePolicy:
    """What one user may do on this gateway, as the hub computes it (see the module docstring)."""

    username: str
    groups: tuple[str, ...]
    may_log_in: bool
    login_reason: str
    admin: bool
    spawner: str
    partitions: dict[str, dict] = field(default_factory=dict)
    accounts: tuple[str, ...] = ()
    default_request: dict | None = None
    dask_backend: str = "local"
    dask_max_workers: int = 0
    dask_presets: dict[str, dict] = field(default_factory=dict)
    uses_resource_policy: bool = False

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "EffectivePolicy":
        """The report from :meth:`as_dict`'s JSON (lists back to tuples; unknown keys refused)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"an effective-policy report with unknown keys {unknown}")
        data = dict(data)
        for key in ("groups", "accounts"):
            data[key] = tuple(data.get(key) or ())
        return cls(**data)

    def _repr_markdown_(self) -> str:
        e = lambda v: html.escape(str(v))  # noqa: E731 - user data in markdown
        lines = [
            f"### {e(self.username)}",
            f"- **groups:** {e(', '.join(self.groups) or 'none')}",
            f"- **may log in:** {'yes' if self.may_log_in else 'no'} ({e(self.login_reason)})",
            f"- **admin:** {'yes' if self.admin else 'no'}",
            f"- **servers:** {e(self.spawner)}",
        ]
        if self.uses_resource_policy:
            if self.partitions:
                lines += ["", "| partition | max cores | max memory (GB) | max GPUs | max walltime (h) |", "|---|---|---|---|---|"]
                lines += [
                    f"| {e(n)} | {p['max_cores']} | {p['max_memory_gb']} | {p['max_gpus']} | {p['max_walltime_hours']} |"
                    for n, p in self.partitions.items()
                ]
                lines += ["", f"- **accounts:** {e(', '.join(self.accounts) or 'none')}"]
                if self.default_request:
                    lines.append(f"- **form starts at:** {e(_request_text(self.default_request))}")
            else:
                lines.append("- **resources:** none: no group of theirs is in the resource policy, so they cannot start a server")
        else:
            lines.append("- **resources:** the spawner applies no group resource policy")
        lines.append(f"- **Dask:** {self.dask_backend} workers, at most {self.dask_max_workers} at once")
        if self.dask_presets:
            lines += ["", "| Dask preset | cores | memory (GB) | workers per job | max workers | walltime (min) |",
                      "|---|---|---|---|---|---|"]
            lines += [
                f"| {e(n)} | {p['cores']} | {p['memory_gb']} | {p['workers_per_job']} | {p['max_workers']} | {p['walltime_minutes']} |"
                for n, p in self.dask_presets.items()
            ]
        else:
            lines.append("- **Dask presets:** none")
        return "\n".join(lines)


def _request_text(request: dict) -> str:
    text = (f"{request['partition']}, {request['cores']} cores, {request['memory_gb']} GB, "
            f"{request['walltime_hours']} h")
    return text + (f", account {request['account']}" if request.get("account") else "")
