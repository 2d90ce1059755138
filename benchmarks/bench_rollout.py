"""Reference-server rollout throughput vs plain transformers generate(), same model and prompts.

Ours: one reference server (`areal_mega.rollout.server`, batched decoding with
a KV cache) driven by the rollout manager over HTTP, greedy, every sample
generating exactly `max_new_tokens` (ignore_eos). Baselines, in the same run
and process budget (OMP_NUM_THREADS threads each): a loop calling
`model.generate()` once per prompt (what a script without a server does),
and one left-padded batched `model.generate()` call (the best transformers
does without a server). Greedy outputs are checked equal to the per-prompt
loop's, so the figures compare the same work.
"""
from __future__ import annotations

import resource
import tempfile
import time

import torch

from areal_mega.models.tiny import build_char_tokenizer, build_tiny_model
from areal_mega.rollout.client import GenerationClient
from areal_mega.rollout.launcher import launch_servers
from areal_mega.rollout.manager import generate_sync
from benchmarks.memory import peak_rss_mb


def _hf_generate(model, prompts, max_new_tokens, batched):
    if not batched:
        outs = []
        for p in prompts:
            ids = torch.tensor([p])
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 min_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0)
            outs.append(out[0, len(p):].tolist())
        return outs
    L = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (L - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in prompts])
    out = model.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                         do_sample=False, pad_token_id=0)
    return out[:, L:].tolist()


def main(quick: bool = False) -> dict:
    from transformers import AutoModelForCausalLM

    num_prompts, prompt_len, max_new = (8, 16, 16) if quick else (32, 32, 64)
    shape = dict(hidden_size=256, intermediate_size=1024, num_layers=4, num_heads=8, num_kv_heads=2,
                 vocab_size=101)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 100, (prompt_len - i % 5,), generator=g).tolist() for i in range(num_prompts)]
    with tempfile.TemporaryDirectory() as d:
        build_char_tokenizer(d)
        build_tiny_model(d, **shape)
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        n_params = sum(p.numel() for p in model.parameters())
        gen_tokens = num_prompts * max_new

        t0 = time.perf_counter()
        loop_out = _hf_generate(model, prompts, max_new, batched=False)
        loop_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        batched_out = _hf_generate(model, prompts, max_new, batched=True)
        batched_s = time.perf_counter() - t0
        base_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        with launch_servers(d, 1) as pool:
            client = GenerationClient(pool.urls)
            params = {"temperature": 0.0, "max_new_tokens": max_new, "ignore_eos": True}
            generate_sync(client, prompts[:2], 1, {**params, "max_new_tokens": 2}, quiet=True)  # warm-up
            t0 = time.perf_counter()
            batch = generate_sync(client, prompts, 1, params, quiet=True)
            server_s = time.perf_counter() - t0
            server_peak_mb = peak_rss_mb(pool.procs[0].pid)

    matches = sum(a == b for a, b in zip(batch.response_ids, loop_out))
    return {
        "config": f"qwen2 {n_params / 1e6:.2f}M params, {num_prompts} prompts x ~{prompt_len} tokens, "
                  f"{max_new} new tokens greedy, 1 server",
        "server_tokens_per_s": gen_tokens / server_s,
        "hf_loop_tokens_per_s": gen_tokens / loop_s,
        "hf_batched_tokens_per_s": gen_tokens / batched_s,
        "ratio_vs_hf_loop": loop_s / server_s,
        "ratio_vs_hf_batched": batched_s / server_s,
        "latency_p50_s": batch.metrics["latency_p50_s"],
        "latency_p99_s": batch.metrics["latency_p99_s"],
        "greedy_equal_to_hf_loop": f"{matches}/{num_prompts}",
        "batched_hf_equal_to_loop": f"{sum(a == b for a, b in zip(batched_out, loop_out))}/{num_prompts}",
        "baseline_peak_rss_mb": base_peak_mb,
        "server_peak_rss_mb": server_peak_mb,
    }
