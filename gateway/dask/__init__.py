"""Dask clusters from the gateway's presets::

    from science_gateway import dask
    dask.presets()                 # what you may use, with your limits
    cluster = dask.cluster("small")
    cluster.scale(4)               # or cluster.adapt(maximum=8); beyond your limit: DaskLimitError
    client = cluster.get_client()
    ...
    cluster.close()                # cancels the worker jobs (kernel exit does too)

In a Slurm session the workers are Slurm jobs charged to your session's account and tagged with
your identity; in the embedded default they are local processes. Needs the ``dask`` extra.
"""

from ..core.presets import DaskPresetError
from .builders import DaskLimitError
from .clusters import GatewayHTCondorCluster, GatewayLocalCluster, GatewaySLURMCluster, cluster, presets, user_config

__all__ = [
    "DaskLimitError",
    "DaskPresetError",
    "GatewayLocalCluster",
    "GatewayHTCondorCluster",
    "GatewaySLURMCluster",
    "cluster",
    "presets",
    "user_config",
]
