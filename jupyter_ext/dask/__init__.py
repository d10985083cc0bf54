"""Dask on the batch system from admin presets.

- :mod:`.presets`: the admin's presets (typed, validated) and a user's resolved view; no Dask import
  (the hub uses it).
- :mod:`.builders`: pure builders from a preset to ``SLURMCluster``/``LocalCluster`` kwargs.
- :mod:`.clusters`: the clusters themselves, run in the kernel (imports Dask).

The user-facing API is :mod:`science_gateway.dask`.
"""
