"""The group resource policy: which groups may use which partitions, with which limits and accounts.

An admin writes it once, as plain dicts in config::

    ResourcePolicy:
      groups:
        astro:
          accounts: [astro-2024]
          partitions:
            cpu:  {max_cores: 4, max_memory_gb: 16, max_walltime_hours: 24}
            long: {max_cores: 2, max_memory_gb: 8, max_walltime_hours: 168}
        students:
          accounts: [teaching]
          partitions:
            debug: {max_cores: 1, max_memory_gb: 2, max_walltime_hours: 1}

Each dict is turned into typed objects (:class:`PartitionLimits`, :class:`GroupPolicy`) by a
``@validate``, so a typo fails at hub start-up with the offending key named. The policy knows
nothing about Slurm: a "partition" is any named pool of resources (a Slurm partition, a Kubernetes
node pool, a Dask preset's queue). Consumers ask two questions:

- :meth:`ResourcePolicy.choices` -- what may a user with these groups choose? (the spawn form)
- :meth:`ResourcePolicy.validate` -- is this request allowed? It returns a clean, typed
  :class:`ResourceRequest` or raises :class:`PolicyError` whose message says what is allowed.
  Given the user's ``allocations`` (from the scheduler's accounting,
  :mod:`science_gateway.core.accounting`), it also refuses an account whose allocation is spent or
  that the scheduler does not associate with the user, with the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from traitlets import Dict, HasTraits, Integer, List, Unicode, validate
from traitlets.config import LoggingConfigurable

from .names import check_name
from .text import quote_prefix
from .typed import build_typed

#: the keys a request may carry (user_options, spawn URLs, REST bodies)
REQUEST_KEYS = ("partition", "cores", "memory_gb", "gpus", "walltime_hours", "account")


class PolicyError(ValueError):
    """A request the policy does not allow; the message says what is allowed."""


class PartitionLimits(HasTraits):
    """The limits one group has on one partition (one entry of ``GroupPolicy.partitions``)."""

    max_cores = Integer(1, min=1, help="Most CPU cores one server may request.")
    max_memory_gb = Integer(2, min=1, help="Most memory (GiB) one server may request.")
    max_gpus = Integer(0, min=0, help="Most GPUs one server may request (0: none).")
    max_walltime_hours = Integer(8, min=1, help="Longest walltime (hours) one server may request.")
    default_cores = Integer(1, min=1, help="Cores offered first in the form.")
    default_memory_gb = Integer(2, min=1, help="Memory (GiB) offered first in the form.")
    default_walltime_hours = Integer(1, min=1, help="Walltime (hours) offered first in the form.")

    def merged(self, other: PartitionLimits) -> PartitionLimits:
        """The most generous of two groups' limits on the same partition."""
        return PartitionLimits(
            **{name: max(getattr(self, name), getattr(other, name)) for name in self.trait_names()}
        )

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in sorted(self.trait_names())}


class GroupPolicy(HasTraits):
    """What the members of one group may use (one entry of ``ResourcePolicy.groups``)."""

    partitions = Dict(
        help="Partition name -> limits (a dict with PartitionLimits' keys, e.g. ``max_cores``)."
    )
    accounts = List(
        Unicode(), help="Allocation accounts members may charge. Empty: they choose none."
    )
    max_dask_workers = Integer(
        0, min=0, help="Most Dask workers on the batch system one member may run at once (0: none)."
    )

    @validate("partitions")
    def _build_partitions(self, proposal):
        return {
            check_name("partition", name): build_typed(PartitionLimits, limits, f"partition {name!r}")
            for name, limits in proposal.value.items()
        }

    @validate("accounts")
    def _check_accounts(self, proposal):
        return [check_name("account", a) for a in proposal.value]


@dataclass(frozen=True)
class Choices:
    """What one user may choose: partitions with their (merged) limits, and accounts."""

    partitions: dict[str, PartitionLimits] = field(default_factory=dict)
    accounts: tuple[str, ...] = ()
    max_dask_workers: int = 0

    def describe(self) -> str:
        """A one-line summary for error messages."""
        if not self.partitions:
            return "no partitions"
        parts = [
            f"{name} (cores<={lim.max_cores}, memory_gb<={lim.max_memory_gb}, gpus<={lim.max_gpus}, "
            f"walltime_hours<={lim.max_walltime_hours})"
            for name, lim in sorted(self.partitions.items())
        ]
        accounts = ", ".join(self.accounts) if self.accounts else "none"
        return f"partitions {'; '.join(parts)}; accounts: {accounts}"


@dataclass(frozen=True)
class ResourceRequest:
    """A request that the policy allowed: every value typed and within limits."""

    partition: str
    cores: int
    memory_gb: int
    gpus: int
    walltime_hours: int
    account: str = ""

    def as_options(self) -> dict:
        """Back to a ``user_options``-shaped dict (what the form and spawn URLs carry)."""
        return {
            "partition": self.partition,
            "cores": self.cores,
            "memory_gb": self.memory_gb,
            "gpus": self.gpus,
            "walltime_hours": self.walltime_hours,
            "account": self.account,
        }


def _as_int(key: str, value) -> int:
    """An integer from JSON or a form/query string; nothing else (no floats, bools, '1e3')."""
    if isinstance(value, bool):
        raise PolicyError(f"{key} must be a whole number, got {quote_prefix(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,6}", value.strip(), flags=re.ASCII):
        return int(value.strip())
    raise PolicyError(f"{key} must be a whole number, got {quote_prefix(value)}")


class ResourcePolicy(LoggingConfigurable):
    """Which groups may use which partitions, with which limits, charged to which accounts."""

    groups = Dict(
        help="""
        Group name -> what its members may use::

            {"astro": {"accounts": ["astro-2024"],
                       "partitions": {"cpu": {"max_cores": 4, "max_memory_gb": 16,
                                              "max_gpus": 0, "max_walltime_hours": 24}}}}

        Partition limits take the keys of PartitionLimits: max_cores, max_memory_gb, max_gpus,
        max_walltime_hours, and default_cores, default_memory_gb, default_walltime_hours (what
        the form offers first). ``max_dask_workers`` is the most Dask workers on the batch
        system a member may run at once (0, the default: none). A user in several groups gets
        every partition any of them allows, with the most generous limits, and every account of
        every group.
        """,
    ).tag(config=True)

    @validate("groups")
    def _build_groups(self, proposal):
        return {
            name: build_typed(GroupPolicy, entry, f"ResourcePolicy.groups[{name!r}]")
            for name, entry in proposal.value.items()
        }

    def choices(self, groups) -> Choices:
        """What a member of ``groups`` may choose (the union over the groups)."""
        partitions: dict[str, PartitionLimits] = {}
        accounts: list[str] = []
        max_dask_workers = 0
        for group in sorted(set(groups)):
            policy = self.groups.get(group)
            if policy is None:
                continue
            max_dask_workers = max(max_dask_workers, policy.max_dask_workers)
            for name, limits in policy.partitions.items():
                partitions[name] = partitions[name].merged(limits) if name in partitions else limits
            accounts.extend(a for a in policy.accounts if a not in accounts)
        return Choices(
            partitions=dict(sorted(partitions.items())), accounts=tuple(accounts), max_dask_workers=max_dask_workers
        )

    def default_request(self, groups) -> ResourceRequest | None:
        """The request the form starts from, or None when the groups allow nothing."""
        choices = self.choices(groups)
        if not choices.partitions:
            return None
        name, lim = next(iter(choices.partitions.items()))
        return ResourceRequest(
            partition=name,
            cores=min(lim.default_cores, lim.max_cores),
            memory_gb=min(lim.default_memory_gb, lim.max_memory_gb),
            gpus=0,
            walltime_hours=min(lim.default_walltime_hours, lim.max_walltime_hours),
            account=choices.accounts[0] if choices.accounts else "",
        )

    def validate(self, groups, options: dict, allocations=None) -> ResourceRequest:
        """Check ``options`` (user_options) for a member of ``groups``.

        Missing values take the partition's defaults; anything unknown, malformed or out of
        policy raises :class:`PolicyError` with a message that says what is allowed.
        ``allocations`` (``{account: status}``, each with a ``refusal()`` that says why the account
        may not be charged, or ``""``; None: no accounting) refuses spent or unassociated accounts;
        a request naming no account then gets the first allowed account that may be charged.
        """
        if not isinstance(options, dict):
            raise PolicyError(f"options must be a mapping, got {type(options).__name__}")
        choices = self.choices(groups)
        if not choices.partitions:
            raise PolicyError(
                f"none of your groups ({', '.join(sorted(groups)) or 'no groups'}) may start servers; "
                "ask the gateway admins to add your group to the resource policy"
            )
        unknown = sorted(quote_prefix(k) for k in set(options) - set(REQUEST_KEYS))
        if unknown:
            shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            raise PolicyError(f"unknown options {shown}; allowed options: {', '.join(REQUEST_KEYS)}")

        default = self.default_request(groups)
        # only a missing or empty value takes the default: 0, False or [] are refused, not defaulted
        partition = options.get("partition")
        if partition is None or partition == "":
            partition = default.partition
        if not isinstance(partition, str) or partition not in choices.partitions:
            raise PolicyError(
                f"partition {quote_prefix(partition)} is not allowed for your groups; "
                f"allowed: {', '.join(choices.partitions)}"
            )
        lim = choices.partitions[partition]

        def bounded(key, lowest, highest, fallback):
            value = options.get(key)
            value = fallback if value in (None, "") else _as_int(key, value)
            if not lowest <= value <= highest:
                raise PolicyError(f"{key} on partition {partition!r} must be {lowest} to {highest}, got {value}")
            return value

        cores = bounded("cores", 1, lim.max_cores, min(lim.default_cores, lim.max_cores))
        memory_gb = bounded("memory_gb", 1, lim.max_memory_gb, min(lim.default_memory_gb, lim.max_memory_gb))
        gpus = bounded("gpus", 0, lim.max_gpus, 0)
        walltime_hours = bounded(
            "walltime_hours", 1, lim.max_walltime_hours, min(lim.default_walltime_hours, lim.max_walltime_hours)
        )

        account = options.get("account")
        if account is None:
            account = ""
        if not isinstance(account, str):
            raise PolicyError(f"account must be a name, got {quote_prefix(account)}")
        if choices.accounts:
            account = account or _first_chargeable(choices.accounts, allocations)
            if account not in choices.accounts:
                raise PolicyError(
                    f"account {quote_prefix(account)} is not allowed for your groups; "
                    f"allowed: {', '.join(choices.accounts)}"
                )
            refusal = allocation_refusal(account, allocations)
            if refusal:
                others = [a for a in choices.accounts if a != account and not allocation_refusal(a, allocations)]
                hint = f"; accounts you may charge: {', '.join(others)}" if others else ""
                raise PolicyError(refusal + hint)
        elif account:
            raise PolicyError("your groups have no allocation accounts: leave account empty")

        return ResourceRequest(
            partition=partition,
            cores=cores,
            memory_gb=memory_gb,
            gpus=gpus,
            walltime_hours=walltime_hours,
            account=account,
        )


def allocation_refusal(account: str, allocations) -> str:
    """Why ``account`` may not be charged according to ``allocations`` ("" when it may, or unknown)."""
    status = (allocations or {}).get(account)
    return status.refusal() if status is not None else ""


def _first_chargeable(accounts, allocations) -> str:
    for account in accounts:
        if not allocation_refusal(account, allocations):
            return account
    return accounts[0]
