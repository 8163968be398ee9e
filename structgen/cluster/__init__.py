"""`structgen cluster`: replicas of `structgen serve` behind sglang-router, supervised (see supervisor.py)."""

from .supervisor import ClusterConfig, Supervisor

__all__ = ["ClusterConfig", "Supervisor"]
