"""Train-step throughput and peak memory: our Megatron engine vs a plain transformers + AdamW loop.

Same tiny Qwen2 (hidden 256, FFN 1024, 4 layers, 4 heads / 2 KV heads,
character vocabulary 101), same batch: `batch` sequences of uniformly random
length in [seq_len/2, seq_len], the second half of each is the response (loss
tokens), fp32, AdamW (lr 1e-4, wd 0), token-mean NLL. Ours: `Engine.train_step`
at TP=1 PP=1 (one process, gloo), sequences packed into rows of at most
`4 * seq_len` tokens ("packed") or `seq_len` tokens (one sequence per row,
"rows"): on CPU the local layer spec attends within each packed sequence
(models/packed_attention.py), O(sum of L_i^2); the 4 x 2048 case packs four
sequences into one row of up to 8,192 tokens, where a dense [T, T] mask would
show in time and memory. Baseline: `Qwen2ForCausalLM` on the right-padded
`[batch, max_len]` batch, `torch.optim.AdamW`. Throughput counts real tokens
(padding excluded) per second of train step, after warm-up steps.

Each side runs in a fresh subprocess, the three sides of a case taking turns
for `rounds` rounds; each side reports its best round (the machine is shared,
and load that comes and goes would otherwise land on one side). Peak memory
is its peak resident set
(VmHWM, reset through /proc/self/clear_refs once the model and optimizer
exist) minus the resident set at that moment: the activations, gradients and
optimizer state a step needs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import torch

from benchmarks.memory import status_kb

MODEL = dict(vocab_size=101, hidden_size=256, intermediate_size=1024, num_layers=4, num_heads=4, num_kv_heads=2)


def _reset_peak() -> int:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status_kb("VmRSS")


def _batch(batch: int, seq_len: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(seq_len // 2, seq_len + 1, (batch,), generator=g).tolist()
    return [torch.randint(3, MODEL["vocab_size"], (n,), generator=g).tolist() for n in lens]


def _ours(model_dir: str, batches: list, budget: int) -> tuple[list[float], int]:
    from areal_mega.engine.config import EngineConfig, OptimizerConfig, ParallelConfig
    from areal_mega.engine.engine import Engine
    from areal_mega.engine.packing import SeqBatch
    from areal_mega.engine.sft import sft_loss
    from areal_mega.platform import init_distributed

    init_distributed()
    cfg = EngineConfig(model_path=model_dir, parallel=ParallelConfig(), max_tokens_per_micro_batch=budget,
                       optimizer=OptimizerConfig(lr=1e-4, beta2=0.999, eps=1e-8, weight_decay=0.0, clip_grad=1e9))
    engine = Engine(cfg)
    base = _reset_peak()
    times = []
    for seqs in batches:
        batch = SeqBatch(seqs, [len(s) // 2 for s in seqs])
        t = time.perf_counter()
        engine.train_step(batch, sft_loss)
        times.append(time.perf_counter() - t)
    return times, status_kb("VmHWM") - base


def _baseline(model_dir: str, batches: list, budget: int) -> tuple[list[float], int]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    base = _reset_peak()
    times = []
    for seqs in batches:
        t = time.perf_counter()
        width = max(len(s) for s in seqs)
        ids = torch.zeros(len(seqs), width, dtype=torch.long)
        attn = torch.zeros(len(seqs), width, dtype=torch.long)
        labels = torch.full((len(seqs), width), -100, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            attn[i, : len(s)] = 1
            labels[i, len(s) // 2 : len(s)] = torch.tensor(s[len(s) // 2 :])
        logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                                 ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return times, status_kb("VmHWM") - base


def _side(side: str, model_dir: str, batch: int, seq_len: int, steps: int, warmup: int) -> dict:
    torch.manual_seed(0)
    batches = [_batch(batch, seq_len, seed) for seed in range(warmup + steps)]
    fn = _baseline if side == "hf" else _ours
    times, peak_kb = fn(model_dir, batches, 4 * seq_len if side == "packed" else seq_len)
    tokens = sum(len(s) for b in batches[warmup:] for s in b)
    return {"tokens_per_s": tokens / sum(times[warmup:]), "s_per_step": sum(times[warmup:]) / steps,
            "peak_mb": peak_kb / 1024}


def _run_side(side: str, model_dir: str, batch: int, seq_len: int, steps: int, warmup: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    cmd = [sys.executable, "-m", "benchmarks.bench_engine", side, model_dir, str(batch), str(seq_len), str(steps), str(warmup)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{side} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(quick: bool) -> dict:
    from areal_mega.models.tiny import build_char_tokenizer, build_tiny_model

    # (batch, seq_len, steps, warmup)
    cases = [(8, 128, 2, 1)] if quick else [(16, 256, 5, 2), (8, 512, 5, 2), (4, 2048, 3, 1)]
    rounds = 1 if quick else 2
    figures = {"model": "qwen2 h256 ffn1024 L4 heads4/2 vocab101 fp32",
               "steps": {f"b{b}_L{n}": s for b, n, s, _ in cases}, "rounds": rounds,
               "threads": int(os.environ.get("OMP_NUM_THREADS", "1"))}
    with tempfile.TemporaryDirectory() as model_dir:
        build_char_tokenizer(model_dir)
        build_tiny_model(model_dir, arch="qwen2", hidden_size=MODEL["hidden_size"],
                         intermediate_size=MODEL["intermediate_size"], num_layers=MODEL["num_layers"],
                         num_heads=MODEL["num_heads"], num_kv_heads=MODEL["num_kv_heads"], tie_word_embeddings=True,
                         max_position_embeddings=max(n for _, n, _, _ in cases))
        for batch, seq_len, steps, warmup in cases:
            key = f"b{batch}_L{seq_len}"
            best = {}
            for _ in range(rounds):
                for side in ("hf", "packed", "rows"):
                    run = _run_side(side, model_dir, batch, seq_len, steps, warmup)
                    if side not in best or run["tokens_per_s"] > best[side]["tokens_per_s"]:
                        best[side] = run
            base = best["hf"]
            figures.update({f"{key}_hf_tok_s": base["tokens_per_s"], f"{key}_hf_peak_mb": base["peak_mb"]})
            for variant in ("packed", "rows"):
                ours = best[variant]
                figures.update({
                    f"{key}_{variant}_tok_s": ours["tokens_per_s"],
                    f"{key}_{variant}_speed_ratio": ours["tokens_per_s"] / base["tokens_per_s"],
                    f"{key}_{variant}_peak_mb": ours["peak_mb"],
                    f"{key}_{variant}_peak_ratio": ours["peak_mb"] / max(base["peak_mb"], 1e-9),
                })
    return figures


if __name__ == "__main__":
    side, model_dir, batch, seq_len, steps, warmup = sys.argv[1:7]
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    print(json.dumps(_side(side, model_dir, int(batch), int(seq_len), int(steps), int(warmup))))
