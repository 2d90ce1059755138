"""Placement on a cluster: which nodes/GPUs generate and which train (config + a pure planner)."""
from areal_mega.cluster.config import ClusterConfig
from areal_mega.cluster.placement import Plan, PlacementError, ServerSlot, plan_placement, trainer_server_gpus

__all__ = ["ClusterConfig", "Plan", "PlacementError", "ServerSlot", "plan_placement", "trainer_server_gpus"]
