"""Weight sync from a 2-rank Megatron trainer (TP=2 or PP=2) to two reference servers (subprocesses).

The trainer is the real `Engine`: it takes train steps, each stage's sender streams its
stage's `Engine.hf_weights()` through `StageWeightSync`, and the trainer's own greedy
decode (scored by `engine.forward`) must equal every server's greedy generation token
for token, with the servers' logprobs within 1e-4 of `engine.forward`'s, after each of
two syncs.

Memory at PP=2 (a 10.6M-parameter model, 21 MB per stage, 1 MB buckets): during a sync
the peak RSS of every rank may grow by at most one bucket plus its stage's largest
tensor (fc1, 4.2 MB) plus 8 MB for allocator and interpreter noise, 13.2 MB in all.
Measured: < 1 MiB (the tensors are views of the parameters, sent as they come). The old
path (each stage cloned and all-gathered as Python objects to every rank) grew the two
ranks by 156 and 142 MiB, 7x a stage.

At PP=2 a server is then killed before a third sync: that sync drops it and rebuilds both
stages' groups with the survivor, whose weights then match the trainer's.
"""
from pathlib import Path

import pytest
from safetensors import safe_open

from areal_mega.rollout.launcher import launch_servers
from tests.distributed import torchrun

VERSIONS = ("v1", "v2")


BUCKET_BYTES = 2**20
NOISE_BYTES = 8 * 2**20


@pytest.fixture(scope="module")
def wide_qwen2_dir(tmp_path_factory):
    """A 4-layer Qwen2 with hidden 512 (10.6M parameters): each PP stage holds 21 MB of weights."""
    from areal_mega.models.tiny import build_char_tokenizer, build_tiny_model

    d = tmp_path_factory.mktemp("wide_qwen2")
    build_char_tokenizer(d)
    build_tiny_model(d, hidden_size=512, intermediate_size=1024, num_layers=4, num_heads=8, num_kv_heads=8)
    return d


@pytest.mark.multirank
@pytest.mark.slow
@pytest.mark.parametrize("layout", ["tp2", "pp2"])
def test_megatron_trainer_sync_makes_servers_match(request, tmp_path, layout):
    model = request.getfixturevalue("tiny_qwen2_dir" if layout == "tp2" else "wide_qwen2_dir")
    args = ["--tp", "2"] if layout == "tp2" else ["--pp", "2", "--bucket-bytes", str(BUCKET_BYTES),
                                                   "--max-new-tokens", "4"]
    with launch_servers(model, 2, log_dir=tmp_path / "servers") as pool:
        if layout == "pp2":
            args += ["--kill-pgid", str(pool.procs[1].pid)]
        ranks = torchrun("tests.weight_sync.worker_megatron_sync", 2,
                         ["--model", str(model), "--urls", ",".join(pool.urls), *args], tmp_path / "out")
    out = ranks[0]
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
    with safe_open(str(Path(model) / "model.safetensors"), "pt") as f:
        checkpoint_names = set(f.keys())
    assert "lm_head.weight" not in out["sent_names"]
    assert sorted(out["sent_names"]) == sorted(checkpoint_names)
    assert out["sync"]["v1"]["num_tensors"] == len(checkpoint_names)

    if layout == "pp2":  # each stage's sender sent its own stage, streaming: every rank within the bound
        assert all(r["largest_sent_bytes"] > 0 for r in ranks)
        for r, part in enumerate(ranks):
            bound = BUCKET_BYTES + part["largest_param_bytes"] + NOISE_BYTES
            for version in VERSIONS:
                growth = part["rss_growth"][version]
                assert growth <= bound, f"rank {r} sync {version}: peak RSS grew {growth / 2**20:.1f} MiB > " \
                                        f"{bound / 2**20:.1f} MiB"
        assert out["lost"] == 1.0 and out["survivor"]["urls"] == pool.urls[:1]
        assert out["survivor"]["versions"] == [["3"] * 3, ["3"]]  # its samples, then /get_weight_version
        assert out["survivor"]["max_dlogprob"] < 1e-4
