"""The placement planner as a pure function over node and GPU counts: good layouts and refusals."""
import pytest

from areal_mega.cluster import ClusterConfig, PlacementError, plan_placement, trainer_server_gpus
from areal_mega.config import ConfigError, load_config
from areal_mega.trainer.config import RunConfig


def _no_gpu_twice(plan):
    used = [(node, gpu) for node, gpu, _ in plan.gpus_in_use()]
    assert len(used) == len(set(used))


def test_generation_nodes_serve_and_the_rest_train():
    cfg = ClusterConfig(nodes=4, gpus_per_node=8, generation_nodes=1, server_base_port=31000)
    plan = plan_placement(cfg, server_tp=2, train_tp=4, hosts=["a", "b", "c", "d"])
    assert [(s.host, s.gpus, s.port) for s in plan.servers] == [
        ("a", (0, 1), 31000), ("a", (2, 3), 31001), ("a", (4, 5), 31002), ("a", (6, 7), 31003)]
    assert plan.servers[3].url == "http://a:31003"
    assert plan.train_hosts == ("b", "c", "d") and plan.nproc_per_node == 8 and plan.world_size == 24
    _no_gpu_twice(plan)


def test_one_node_servers_take_the_last_gpus():
    plan = plan_placement(ClusterConfig(nodes=1, gpus_per_node=8, generation_gpus=2), server_tp=1, train_tp=2)
    assert [s.gpus for s in plan.servers] == [(6,), (7,)]
    assert plan.nproc_per_node == 6 and plan.world_size == 6
    _no_gpu_twice(plan)
    # what the trainer launches: the same GPUs, if torchrun left them free
    assert trainer_server_gpus(ClusterConfig(generation_gpus=2), 2, 1, local_world_size=6, visible_gpus=8) == [
        (6,), (7,)]


def test_no_generation_gpus_means_no_servers():
    plan = plan_placement(ClusterConfig(), server_tp=1)
    assert plan.servers == () and plan.world_size == 8


@pytest.mark.parametrize("cfg,server_tp,train_tp,match", [
    (ClusterConfig(nodes=2, generation_nodes=2), 1, 1, r"cluster\.generation_nodes=2 leaves no node to train"),
    (ClusterConfig(nodes=2, gpus_per_node=6, generation_nodes=1), 4, 1,
     r"rollout\.tp_size=4 does not divide cluster\.gpus_per_node=6"),
    (ClusterConfig(nodes=3, generation_nodes=1), 1, 3, r"engine\.parallel\.tp \* engine\.parallel\.pp = 3 .* 16 GPUs"),
    (ClusterConfig(nodes=2, generation_gpus=2), 1, 1, r"cluster\.generation_gpus=2 is for one node"),
    (ClusterConfig(nodes=1, generation_nodes=1), 1, 1, r"cluster\.generation_nodes=1 needs cluster\.nodes > 1"),
    (ClusterConfig(generation_gpus=8), 1, 1, r"cluster\.generation_gpus=8 leaves no GPU to train"),
    (ClusterConfig(generation_gpus=3), 2, 1, r"rollout\.tp_size=2 does not divide cluster\.generation_gpus=3"),
])
def test_impossible_layouts_are_refused(cfg, server_tp, train_tp, match):
    with pytest.raises(PlacementError, match=match):
        plan_placement(cfg, server_tp, train_tp)


def test_host_list_must_match_the_node_count():
    with pytest.raises(PlacementError, match=r"cluster\.nodes=3 but the job has 2 nodes \(a b\)"):
        plan_placement(ClusterConfig(nodes=3, generation_nodes=1), 1, hosts=["a", "b"])


def test_trainer_launched_servers_never_share_a_rank_gpu():
    # torchrun started 8 ranks on 8 GPUs: the servers' GPUs 6-7 are taken
    with pytest.raises(PlacementError, match=r"torchrun started 8 ranks .* GPUs 6-7: they would share GPUs; "
                                             r"run torchrun --nproc-per-node 6"):
        trainer_server_gpus(ClusterConfig(generation_gpus=2), 2, 1, local_world_size=8, visible_gpus=8)
    # no GPUs set aside at all (what launcher.py did before: server i on GPU i, rank i's GPU)
    with pytest.raises(PlacementError, match=r"need GPUs of their own: set cluster\.generation_gpus"):
        trainer_server_gpus(ClusterConfig(), 1, 1, local_world_size=8, visible_gpus=8)
    with pytest.raises(PlacementError, match=r"rollout\.num_servers=3 but .* = 2 servers"):
        trainer_server_gpus(ClusterConfig(generation_gpus=2), 3, 1, local_world_size=6, visible_gpus=8)
    with pytest.raises(PlacementError, match=r"cluster\.nodes=2: servers of a multi-node job"):
        trainer_server_gpus(ClusterConfig(nodes=2, generation_nodes=1), 8, 1, local_world_size=8, visible_gpus=8)
    with pytest.raises(PlacementError, match=r"cluster\.gpus_per_node=8 but this node shows 4 GPUs"):
        trainer_server_gpus(ClusterConfig(generation_gpus=2), 2, 1, local_world_size=6, visible_gpus=4)


def test_run_config_checks_the_layout_and_refuses_unknown_keys(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("engine: {model_path: /m, parallel: {tp: 4}}\nrollout: {tp_size: 2, num_servers: 8}\n"
                    "cluster: {nodes: 4, generation_nodes: 2}\n")
    cfg = load_config(RunConfig, path)
    assert cfg.cluster.generation_nodes == 2
    with pytest.raises(ConfigError, match=r"cluster\.gpu_per_node"):
        load_config(RunConfig, path, ["cluster.gpu_per_node=4"])
    with pytest.raises(ConfigError, match=r"rollout\.num_servers=4 but the cluster section plans 8 servers"):
        load_config(RunConfig, path, ["rollout.num_servers=4"])
    with pytest.raises(ConfigError, match=r"engine\.parallel\.tp \* engine\.parallel\.pp = 12"):
        load_config(RunConfig, path, ["engine.parallel.pp=3"])


@pytest.mark.parametrize("recipe", ["configs/r1_distill_1.5b/stage1_8k.yaml", "configs/r1_distill_1.5b/stage2_16k.yaml",
                                    "configs/r1_distill_1.5b/stage3_24k.yaml", "configs/qwen2.5_7b_zero/zero.yaml"])
def test_recipes_plan_separate_generation_and_training_nodes(recipe):
    cfg = load_config(RunConfig, recipe)
    plan = plan_placement(cfg.cluster, cfg.rollout.tp_size, cfg.engine.parallel.tp, cfg.engine.parallel.pp)
    assert plan.servers and len(plan.servers) == cfg.rollout.num_servers
    assert not {s.node for s in plan.servers} & set(plan.train_nodes)
