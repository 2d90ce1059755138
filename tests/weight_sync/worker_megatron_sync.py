"""torchrun worker: a Megatron trainer (TP or PP over 2 ranks) syncs its weights to two reference servers.

The servers (URLs in --urls) run the checkpoint in --model. Every rank builds the
same trainable `Engine`; then, twice: one train step (Adam, large lr) moves the
weights, `Engine.all_hf_weights()` is broadcast (rank 0 sends, every rank
consumes) in small buckets, and rank 0 asks each server for greedy
continuations. The trainer's own greedy decode comes from `engine.forward`:
at each step every vocabulary token is scored as a one-token response, so the
argmax is the engine's greedy choice (no export, no transformers model).

Before the first step the servers' greedy samples of the checkpoint are taken
and scored by the engine too (same starting weights on both sides).

Rank 0 writes rank0.json (other ranks write {}):
  engine_greedy: {"v1", "v2"} -> per prompt `[max_new_tokens]` token ids
  greedy_margin: {"v1", "v2"} -> smallest top-1 minus top-2 logprob over those decode steps
  server_greedy: {"original", "v1", "v2"} -> per server, per prompt token ids
  server_versions: {"original", "v1", "v2"} -> per server, the version of each sample
  reported_versions: {"v1", "v2"} -> per server, /get_weight_version after the sync
  max_dlogprob: {"original", "v1", "v2"} -> max |server logprob - engine.forward logprob| over all tokens
  sync: {"v1", "v2"} -> broadcast_weights stats; sent_names: HF names sent (sync 1)
"""
import argparse
import asyncio
import json
from pathlib import Path

import torch
import torch.distributed as dist

from areal_mega.engine.config import EngineConfig, OptimizerConfig, ParallelConfig
from areal_mega.engine.engine import Engine
from areal_mega.engine.packing import SeqBatch
from areal_mega.platform import init_distributed
from areal_mega.platform.device import free_port
from areal_mega.rollout.client import GenerationClient
from areal_mega.rollout.manager import generate_sync
from areal_mega.weight_sync.broadcast import broadcast_weights, init_weight_update_group

PROMPTS = [[5, 6, 7, 8], [20, 21], [40, 41, 42, 43, 44, 45]]


def engine_greedy(engine: Engine, prompts: list[list[int]], max_new_tokens: int) -> tuple[list[list[int]], float]:
    """Greedy decode with the engine itself (all ranks call it).

    Each step scores every token v of the vocabulary as the one-token response of
    prefix + [v] (one batch of len(prompts) * vocab sequences); the argmax is the next token.
    Returns (`[max_new_tokens]` token ids per prompt, smallest top-1 minus top-2 logprob seen).
    """
    vocab = engine.dims.vocab_size
    seqs = [list(p) for p in prompts]
    margin = float("inf")
    for _ in range(max_new_tokens):
        batch = SeqBatch([s + [v] for s in seqs for v in range(vocab)], [len(s) for s in seqs for _ in range(vocab)])
        lp = engine.forward(batch if dist.get_rank() == 0 else None)["logprobs"]
        top = torch.cat(lp).view(len(seqs), vocab).topk(2, dim=-1)
        margin = min(margin, (top.values[:, 0] - top.values[:, 1]).min().item())
        for s, t in zip(seqs, top.indices[:, 0].tolist()):
            s.append(t)
    return [s[len(p):] for s, p in zip(seqs, prompts)], margin


def perturbation_batch(vocab: int, n: int = 8, length: int = 16) -> SeqBatch:
    """Random sequences whose responses the train step makes more likely (advantage +1 per token)."""
    g = torch.Generator().manual_seed(0)
    seqs = torch.randint(3, vocab, (n, length), generator=g).tolist()
    return SeqBatch(seqs, [4] * n, {"advantages": [torch.ones(length - 4) for _ in range(n)]})


def loss_fn(logprobs, entropy, fields, mb, global_num_tokens, global_num_seqs):
    return -(logprobs * fields["advantages"]).sum() / global_num_tokens, {}


def ask_servers(urls: list[str], max_new_tokens: int) -> tuple[list, list, list]:
    """Rank 0: greedy samples from each server separately -> (token ids, logprobs, versions), per server."""
    params = {"temperature": 0.0, "max_new_tokens": max_new_tokens, "ignore_eos": True}
    out = [generate_sync(GenerationClient([url]), PROMPTS, 1, params, quiet=True) for url in urls]
    return ([o.response_ids for o in out], [o.rollout_logprobs for o in out], [o.weight_versions for o in out])


def server_logprob_gap(engine: Engine, server_ids, server_lps) -> float:
    """All ranks: max |server logprob - engine.forward logprob| over every server's responses."""
    box = [(server_ids, server_lps)]
    dist.broadcast_object_list(box, src=0)
    server_ids, server_lps = box[0]
    ids = [r for per_server in server_ids for r in per_server]
    lps = [r for per_server in server_lps for r in per_server]
    prompts = PROMPTS * len(server_ids)
    batch = SeqBatch([p + r for p, r in zip(prompts, ids)], [len(p) for p in prompts])
    mine = engine.forward(batch if dist.get_rank() == 0 else None)["logprobs"]
    return max((m - torch.tensor(s)).abs().max().item() for m, s in zip(mine, lps))


def reported_versions(urls: list[str]) -> list[str]:
    """Each server's /get_weight_version."""
    async def run():
        client = GenerationClient(urls)
        try:
            return await client.get_weight_versions()
        finally:
            await client.close()

    return asyncio.run(run())


def recording(named, sent: list):
    """Pass (hf_name, tensor) pairs through as float32, appending each name to `sent`."""
    for name, tensor in named:
        sent.append(name)
        yield name, tensor.float()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--urls", required=True, help="comma-separated server URLs")
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--pp", type=int, default=1)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--max-new-tokens", type=int, default=10)
    ap.add_argument("--bucket-bytes", type=int, default=64 * 1024)
    ap.add_argument("--micro-batch-tokens", type=int, default=2048)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    init_distributed()
    urls = args.urls.split(",")
    rank0 = dist.get_rank() == 0
    cfg = EngineConfig(
        model_path=args.model,
        parallel=ParallelConfig(tp=args.tp, pp=args.pp),
        optimizer=OptimizerConfig(lr=args.lr, weight_decay=0.0, clip_grad=1e9),
        max_tokens_per_micro_batch=args.micro_batch_tokens,
        dtype="fp32",
    )
    engine = Engine(cfg)
    result = {key: {} for key in ("engine_greedy", "greedy_margin", "server_greedy", "server_versions",
                                  "reported_versions", "max_dlogprob", "sync")}
    group = server_ids = server_lps = None
    if rank0:
        server_ids, server_lps, versions = ask_servers(urls, args.max_new_tokens)
        result["server_greedy"]["original"], result["server_versions"]["original"] = server_ids, versions
        group = init_weight_update_group(urls, "127.0.0.1", free_port(), "weight_update_group", "gloo")
    result["max_dlogprob"]["original"] = server_logprob_gap(engine, server_ids, server_lps)
    batch = perturbation_batch(engine.dims.vocab_size)
    for version in ("1", "2"):
        key = f"v{version}"
        stats = engine.train_step(batch if rank0 else None, loss_fn)
        assert stats["skipped"] == 0.0, stats
        result["engine_greedy"][key], result["greedy_margin"][key] = engine_greedy(engine, PROMPTS, args.max_new_tokens)
        named = engine.all_hf_weights()
        if rank0:
            sent = []
            result["sync"][key] = broadcast_weights(group, urls, recording(named, sent), version,
                                                    bucket_bytes=args.bucket_bytes)
            result.setdefault("sent_names", sent)
            result["reported_versions"][key] = reported_versions(urls)
            server_ids, server_lps, versions = ask_servers(urls, args.max_new_tokens)
            result["server_greedy"][key], result["server_versions"][key] = server_ids, versions
        else:
            for _ in named:
                pass
        result["max_dlogprob"][key] = server_logprob_gap(engine, server_ids, server_lps)
    Path(args.out, f"rank{dist.get_rank()}.json").write_text(json.dumps(result if rank0 else {}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
