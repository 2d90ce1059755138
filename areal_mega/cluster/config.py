"""The `cluster:` section of a run config: the job's nodes and GPUs, and which of them generate."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ClusterConfig:
    """Generation and training on separate GPUs (AReaL v0.1's layout).

    nodes / gpus_per_node: the job's size (launch/slurm.sbatch sets both from
      SLURM_JOB_NODELIST and SLURM_GPUS_ON_NODE).
    generation_nodes: with nodes > 1, the job's first `generation_nodes` nodes
      only serve (gpus_per_node / rollout.tp_size servers each); the other
      nodes run torchrun with gpus_per_node ranks each.
    generation_gpus: on one node (nodes == 1), the node's last `generation_gpus`
      GPUs run the servers the trainer launches (rollout.num_servers x
      rollout.tp_size of them); torchrun gets the first
      gpus_per_node - generation_gpus (its LOCAL_RANKs).
    server_base_port: server j of a node listens on server_base_port + j.
    """

    nodes: int = 1
    gpus_per_node: int = 8
    generation_nodes: int = 0
    generation_gpus: int = 0
    server_base_port: int = 30000

    def __post_init__(self):
        for name in ("nodes", "gpus_per_node"):
            if getattr(self, name) < 1:
                raise ValueError(f"cluster.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("generation_nodes", "generation_gpus"):
            if getattr(self, name) < 0:
                raise ValueError(f"cluster.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.server_base_port < 65536:
            raise ValueError(f"cluster.server_base_port must be in [1, 65535], got {self.server_base_port}")
