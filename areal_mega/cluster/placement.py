"""The placement planner: node and GPU counts -> servers (node, GPUs, port) and trainer ranks.

Pure functions over counts; every refusal is a `PlacementError` naming the
config keys, raised before anything starts. Two layouts:

- several nodes (`cluster.nodes > 1`): the first `cluster.generation_nodes`
  nodes serve, each with gpus_per_node / tp servers on GPUs [j*tp, (j+1)*tp)
  and ports server_base_port + j; the rest run torchrun, gpus_per_node ranks
  per node (launch/slurm.sbatch);
- one node: the trainer launches its servers itself on the node's last
  `cluster.generation_gpus` GPUs; torchrun's ranks hold GPUs
  0 .. gpus_per_node - generation_gpus - 1 (`trainer_server_gpus` checks
  that torchrun really started no more ranks than that).
"""
from __future__ import annotations

from dataclasses import dataclass

from areal_mega.cluster.config import ClusterConfig


class PlacementError(ValueError):
    """A layout that cannot run (shared GPUs, counts that do not divide); the message names the keys."""


@dataclass(frozen=True)
class ServerSlot:
    """One generation server: `node` (index in the job), its `host`, GPU ids on that node, port."""

    node: int
    host: str
    gpus: tuple[int, ...]
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class Plan:
    """Servers and trainer ranks of one job; no GPU appears in both."""

    servers: tuple[ServerSlot, ...]
    train_nodes: tuple[int, ...]  # node indices that run torchrun
    train_hosts: tuple[str, ...]
    nproc_per_node: int  # trainer ranks per training node, on GPUs 0 .. nproc_per_node - 1

    @property
    def world_size(self) -> int:
        return len(self.train_nodes) * self.nproc_per_node

    def gpus_in_use(self) -> list[tuple[int, int, str]]:
        """(node, gpu, "server i" | "trainer") for every GPU the plan gives out."""
        used = [(s.node, g, f"server {i}") for i, s in enumerate(self.servers) for g in s.gpus]
        return used + [(n, g, "trainer") for n in self.train_nodes for g in range(self.nproc_per_node)]


def _servers_on(node: int, host: str, first_gpu: int, num_gpus: int, tp: int, base_port: int) -> list[ServerSlot]:
    return [ServerSlot(node, host, tuple(range(first_gpu + j * tp, first_gpu + (j + 1) * tp)), base_port + j)
            for j in range(num_gpus // tp)]


def plan_placement(cluster: ClusterConfig, server_tp: int, train_tp: int = 1, train_pp: int = 1,
                   hosts: list[str] | None = None) -> Plan:
    """The plan of `cluster` with `server_tp` GPUs per server and a trainer of TP x PP.

    hosts: the job's node names in order (default node0, node1, ...); must
    number cluster.nodes. Raises PlacementError for: no node or GPU left to
    train, rollout.tp_size not dividing the serving GPUs of a node, the
    trainer's world size not divisible by engine.parallel.tp * pp, a host list
    of the wrong length, and (a guard) any GPU given out twice.
    """
    c = cluster
    if server_tp < 1:
        raise PlacementError(f"rollout.tp_size must be >= 1, got {server_tp}")
    if hosts is None:
        hosts = [f"node{i}" for i in range(c.nodes)]
    if len(hosts) != c.nodes:
        raise PlacementError(f"cluster.nodes={c.nodes} but the job has {len(hosts)} nodes ({' '.join(hosts)})")
    if c.nodes > 1:
        if c.generation_gpus:
            raise PlacementError(
                f"cluster.generation_gpus={c.generation_gpus} is for one node; with cluster.nodes={c.nodes} "
                "whole nodes serve (cluster.generation_nodes), so every training node runs the same number of ranks")
        if c.generation_nodes >= c.nodes:
            raise PlacementError(f"cluster.generation_nodes={c.generation_nodes} leaves no node to train "
                                 f"(cluster.nodes={c.nodes})")
        if c.generation_nodes and c.gpus_per_node % server_tp:
            raise PlacementError(f"rollout.tp_size={server_tp} does not divide cluster.gpus_per_node="
                                 f"{c.gpus_per_node}: a server cannot span nodes")
        servers = [s for n in range(c.generation_nodes)
                   for s in _servers_on(n, hosts[n], 0, c.gpus_per_node, server_tp, c.server_base_port)]
        train_nodes = tuple(range(c.generation_nodes, c.nodes))
        nproc = c.gpus_per_node
    else:
        if c.generation_nodes:
            raise PlacementError(f"cluster.generation_nodes={c.generation_nodes} needs cluster.nodes > 1; "
                                 "on one node set cluster.generation_gpus")
        if c.generation_gpus >= c.gpus_per_node:
            raise PlacementError(f"cluster.generation_gpus={c.generation_gpus} leaves no GPU to train "
                                 f"(cluster.gpus_per_node={c.gpus_per_node})")
        if c.generation_gpus % server_tp:
            raise PlacementError(f"rollout.tp_size={server_tp} does not divide cluster.generation_gpus="
                                 f"{c.generation_gpus}")
        nproc = c.gpus_per_node - c.generation_gpus
        servers = _servers_on(0, hosts[0], nproc, c.generation_gpus, server_tp, c.server_base_port)
        train_nodes = (0,)
    plan = Plan(tuple(servers), train_nodes, tuple(hosts[n] for n in train_nodes), nproc)
    if plan.world_size % (train_tp * train_pp):
        raise PlacementError(
            f"engine.parallel.tp * engine.parallel.pp = {train_tp * train_pp} does not divide the trainer's "
            f"{plan.world_size} GPUs ({len(train_nodes)} node(s) x {nproc})")
    seen: dict[tuple[int, int], str] = {}
    for node, gpu, who in plan.gpus_in_use():
        if (node, gpu) in seen:
            raise PlacementError(f"GPU {gpu} of node {hosts[node]} given to both {seen[node, gpu]} and {who}")
        seen[node, gpu] = who
    return plan


def trainer_server_gpus(cluster: ClusterConfig, num_servers: int, server_tp: int, local_world_size: int,
                        visible_gpus: int) -> list[tuple[int, ...]]:
    """GPU ids of each server that trainer rank 0 launches on its own node (rollout.urls empty, on GPU).

    local_world_size: the ranks torchrun started on this node (LOCAL_WORLD_SIZE;
    they hold GPUs 0 .. local_world_size - 1); visible_gpus: torch.cuda.device_count().
    Refuses a layout in which a server would land on a trainer rank's GPU.
    """
    c = cluster
    if c.nodes > 1:
        raise PlacementError(f"cluster.nodes={c.nodes}: servers of a multi-node job run on the generation nodes "
                             "(launch/slurm.sbatch passes their rollout.urls); the trainer launches servers on one "
                             "node only")
    if not c.generation_gpus:
        raise PlacementError(
            f"rollout.num_servers={num_servers} servers launched by the trainer need GPUs of their own: set "
            f"cluster.generation_gpus (the node's last GPUs; torchrun then gets --nproc-per-node "
            f"gpus_per_node - generation_gpus), or start servers elsewhere and pass rollout.urls")
    plan = plan_placement(c, server_tp)
    if num_servers != len(plan.servers):
        raise PlacementError(f"rollout.num_servers={num_servers} but cluster.generation_gpus={c.generation_gpus} / "
                             f"rollout.tp_size={server_tp} = {len(plan.servers)} servers")
    if visible_gpus < c.gpus_per_node:
        raise PlacementError(f"cluster.gpus_per_node={c.gpus_per_node} but this node shows {visible_gpus} GPUs")
    if local_world_size > plan.nproc_per_node:
        first = plan.servers[0].gpus[0]
        raise PlacementError(
            f"torchrun started {local_world_size} ranks on this node (GPUs 0-{local_world_size - 1}), but "
            f"cluster.generation_gpus={c.generation_gpus} puts servers on GPUs {first}-{c.gpus_per_node - 1}: they "
            f"would share GPUs; run torchrun --nproc-per-node {plan.nproc_per_node}")
    return [s.gpus for s in plan.servers]
