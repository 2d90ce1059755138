"""Weight sync from a 2-rank Megatron trainer (TP=2 or PP=2) to two reference servers (subprocesses).

The trainer is the real `Engine`: it takes train steps, sends `Engine.all_hf_weights()`
through `broadcast_weights`, and its own greedy decode (scored by `engine.forward`)
must equal every server's greedy generation token for token, with the servers'
logprobs within 1e-4 of `engine.forward`'s, after each of two syncs.
"""
from pathlib import Path

import pytest
from safetensors import safe_open

from areal_mega.rollout.launcher import launch_servers
from tests.distributed import torchrun

VERSIONS = ("v1", "v2")


@pytest.mark.multirank
@pytest.mark.slow
@pytest.mark.parametrize("layout", [["--tp", "2"], ["--pp", "2"]], ids=["tp2", "pp2"])
def test_megatron_trainer_sync_makes_servers_match(tiny_qwen2_dir, tmp_path, layout):
    with launch_servers(tiny_qwen2_dir, 2, log_dir=tmp_path / "servers") as pool:
        out = torchrun("tests.weight_sync.worker_megatron_sync", 2,
                       ["--model", str(tiny_qwen2_dir), "--urls", ",".join(pool.urls), *layout], tmp_path / "out")[0]
    engine, servers = out["engine_greedy"], out["server_greedy"]

    # Before any step both servers run the checkpoint the engine starts from.
    assert servers["original"][0] == servers["original"][1]
    assert out["server_versions"]["original"] == [["default"] * 3] * 2
    assert out["max_dlogprob"]["original"] < 1e-4
    # Each train step changes the greedy outputs, so a sync that sent nothing (or stale weights) would show.
    assert engine["v1"] != servers["original"][0] and engine["v2"] != engine["v1"]

    for version in VERSIONS:
        margin = out["greedy_margin"][version]
        assert servers[version] == [engine[version]] * 2, f"{version} (closest top-2 logprob gap {margin:.2e})"
        assert out["max_dlogprob"][version] < 1e-4, version
        number = version[1:]
        assert out["reported_versions"][version] == [number] * 2
        assert out["server_versions"][version] == [[number] * 3] * 2
        sync = out["sync"][version]
        assert sync["num_buckets"] >= 4 and sync["gb_per_s"] > 0

    # Every checkpoint tensor was sent once, in HF names; tied embeddings: no lm_head.
    with safe_open(str(Path(tiny_qwen2_dir) / "model.safetensors"), "pt") as f:
        checkpoint_names = set(f.keys())
    assert "lm_head.weight" not in out["sent_names"]
    assert sorted(out["sent_names"]) == sorted(checkpoint_names)
    assert out["sync"]["v1"]["num_tensors"] == len(checkpoint_names)
