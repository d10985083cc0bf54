"""Spawners that start users' Jupyter servers (local processes, Slurm, Kubernetes)."""
