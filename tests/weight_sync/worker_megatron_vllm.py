"""torchrun worker: a Megatron trainer (TP=2) syncs its weights to one vLLM-CPU server that rank 0 launches
itself, from inside its torchrun rank (the launcher strips torchrun's rendezvous environment).

Twice: one train step (Adam, large lr) moves the weights, `StageWeightSync` (vLLM protocol) streams
`Engine.hf_weights()` in small buckets, then rank 0 asks the server for greedy continuations and for
samples at temperature --temperature. The trainer's greedy decode and logprobs come from
`engine.forward` (worker_megatron_sync.engine_greedy; logits / temperature as in training).

rank0.json: engine_greedy / server_greedy {"v1", "v2"} -> per prompt token ids (server_greedy also
"original"), server_versions {"original", "v1", "v2"} -> version of each sample, reported_versions
{"v1", "v2"} -> /weight_info, max_dlogprob {"original", "v1", "v2"} -> max |server - engine| over the
sampled tokens at --temperature, sync {"v1", "v2"} -> sync stats, start_seconds: the server's start-up.
"""
import argparse
import asyncio
import json
import time
from pathlib import Path

import torch
import torch.distributed as dist

from areal_mega.engine.config import EngineConfig, OptimizerConfig, ParallelConfig
from areal_mega.engine.engine import Engine
from areal_mega.engine.packing import SeqBatch
from areal_mega.platform import init_distributed
from areal_mega.rollout.client import GenerationClient
from areal_mega.rollout.launcher import launch_servers
from areal_mega.rollout.manager import generate_sync
from areal_mega.weight_sync import StageLayout, StageWeightSync, WeightSyncConfig
from tests.weight_sync.worker_megatron_sync import PROMPTS, engine_greedy, loss_fn, perturbation_batch


def ask(url: str, params: dict, n: int):
    out = generate_sync(GenerationClient([url], backend="vllm"), PROMPTS, n, params, quiet=True)
    return out.response_ids, out.rollout_logprobs, out.weight_versions


def reported_versions(urls: list[str]) -> list[str]:
    async def run():
        client = GenerationClient(urls, backend="vllm")
        try:
            return await client.get_weight_versions()
        finally:
            await client.close()

    return asyncio.run(run())


def logprob_gap(engine: Engine, ids, lps, temperature: float) -> float:
    """All ranks: max |server logprob - engine.forward logprob at `temperature`| over the samples."""
    box = [(ids, lps)]
    dist.broadcast_object_list(box, src=0)
    ids, lps = box[0]
    prompts = [p for p in PROMPTS for _ in range(2)]
    batch = SeqBatch([p + r for p, r in zip(prompts, ids)], [len(p) for p in prompts])
    out = engine.forward(batch if dist.get_rank() == 0 else None, temperature=temperature)
    box = [max((m.double() - torch.tensor(s, dtype=torch.float64)).abs().max().item()
               for m, s in zip(out["logprobs"], lps)) if out else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--log-dir", required=True)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--bucket-bytes", type=int, default=64 * 1024)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    init_distributed()
    rank0 = dist.get_rank() == 0
    cfg = EngineConfig(model_path=args.model, parallel=ParallelConfig(tp=2, pp=1), dtype="fp32",
                       optimizer=OptimizerConfig(lr=0.1, weight_decay=0.0, clip_grad=1e9))
    engine = Engine(cfg)
    pool, result = None, {k: {} for k in ("engine_greedy", "server_greedy", "server_versions", "reported_versions",
                                          "max_dlogprob", "sync")}
    if rank0:
        t0 = time.monotonic()
        pool = launch_servers(args.model, 1, backend="vllm", log_dir=args.log_dir, start_timeout_s=900)
        result["start_seconds"] = time.monotonic() - t0
    urls = pool.urls if rank0 else None
    t = engine.topo
    layout = StageLayout(t.pp_rank, t.pp_size, t.is_sync_rank, t.dp_rank == 0, engine.object_group)
    sync = StageWeightSync(layout, WeightSyncConfig(backend="gloo", bucket_bytes=args.bucket_bytes),
                           server_backend="vllm")
    greedy = {"temperature": 0.0, "max_new_tokens": args.max_new_tokens, "ignore_eos": True}
    sampled = {"temperature": args.temperature, "max_new_tokens": args.max_new_tokens, "ignore_eos": True,
               "sampling_seed": 11}
    try:
        sync.join(urls)
        for key in ("original", "v1", "v2"):
            if key != "original":
                stats = engine.train_step(perturbation_batch(engine.dims.vocab_size) if rank0 else None, loss_fn)
                assert stats["skipped"] == 0.0, stats
                result["engine_greedy"][key] = engine_greedy(engine, PROMPTS, args.max_new_tokens)[0]
                result["sync"][key] = sync.sync(engine.hf_weights() if layout.gathers else None, key[1:])
            ids = lps = None
            if rank0:
                if key != "original":
                    result["reported_versions"][key] = reported_versions(pool.urls)
                result["server_greedy"][key] = ask(pool.urls[0], greedy, 1)[0]
                ids, lps, result["server_versions"][key] = ask(pool.urls[0], sampled, 2)
            result["max_dlogprob"][key] = logprob_gap(engine, ids, lps, args.temperature)
    finally:
        if pool is not None:
            pool.stop()
    Path(args.out, f"rank{dist.get_rank()}.json").write_text(json.dumps(result if rank0 else {}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
