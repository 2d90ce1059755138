"""torchrun worker: a Megatron trainer (TP or PP over 2 ranks) syncs its weights to two reference servers.

The servers (URLs in --urls) run the checkpoint in --model. Every rank builds the
same trainable `Engine` and a `StageWeightSync` (each PP stage's sender joins its
own weight-update group); then, twice: one train step (Adam, large lr) moves the
weights, every stage's sender streams `Engine.hf_weights()` of its stage in small
buckets, and rank 0 asks each server for greedy continuations. The trainer's own
greedy decode comes from `engine.forward`: at each step every vocabulary token is
scored as a one-token response, so the argmax is the engine's greedy choice (no
export, no transformers model).

Before the first step the servers' greedy samples of the checkpoint are taken
and scored by the engine too (same starting weights on both sides).

Each rank measures the growth of its peak RSS during each sync (VmHWM reset through
/proc/self/clear_refs just before, minus VmRSS then) and writes rank{r}.json with
  rss_growth: {"v1", "v2"} -> bytes; largest_param_bytes: its stage's largest Megatron
  parameter; largest_sent_bytes: the largest tensor it sent (0 unless a sender)
With --kill-pgid, rank 0 then kills that server (process group), and a third step's sync must
drop it and rebuild every stage's group with the survivor (lost: servers_lost reported;
survivor: the survivor's versions and its logprob gap to engine.forward after that sync).
Rank 0's file also holds:
  engine_greedy: {"v1", "v2"} -> per prompt `[max_new_tokens]` token ids
  greedy_margin: {"v1", "v2"} -> smallest top-1 minus top-2 logprob over those decode steps
  server_greedy: {"original", "v1", "v2"} -> per server, per prompt token ids
  server_versions: {"original", "v1", "v2"} -> per server, the version of each sample
  reported_versions: {"v1", "v2"} -> per server, /get_weight_version after the sync
  max_dlogprob: {"original", "v1", "v2"} -> max |server logprob - engine.forward logprob| over all tokens
  sync: {"v1", "v2"} -> StageWeightSync.sync stats; sent_names: HF names sent by every stage (sync 1)
"""
import argparse
import asyncio
import json
import os
import signal
from pathlib import Path

import torch
import torch.distributed as dist

from areal_mega.engine.config import EngineConfig, OptimizerConfig, ParallelConfig
from areal_mega.engine.engine import Engine
from areal_mega.engine.packing import SeqBatch
from areal_mega.platform import init_distributed
from areal_mega.rollout.client import GenerationClient
from areal_mega.rollout.manager import generate_sync
from areal_mega.weight_sync import StageLayout, StageWeightSync, WeightSyncConfig

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
        out = engine.forward(batch if dist.get_rank() == 0 else None)  # rank 0 only; it shares the choice
        box = [None]
        if out is not None:
            top = torch.cat(out["logprobs"]).view(len(seqs), vocab).topk(2, dim=-1)
            box = [((top.values[:, 0] - top.values[:, 1]).min().item(), top.indices[:, 0].tolist())]
        dist.broadcast_object_list(box, src=0)
        margin = min(margin, box[0][0])
        for s, t in zip(seqs, box[0][1]):
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
    out = engine.forward(batch if dist.get_rank() == 0 else None)  # rank 0 only; it shares the figure
    box = [max((m - torch.tensor(s)).abs().max().item() for m, s in zip(out["logprobs"], lps)) if out else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def reported_versions(urls: list[str]) -> list[str]:
    """Each server's /get_weight_version."""
    async def run():
        client = GenerationClient(urls)
        try:
            return await client.get_weight_versions()
        finally:
            await client.close()

    return asyncio.run(run())


def recording(named, sent: list, sizes: list):
    """Pass (hf_name, tensor) pairs through as float32, appending each name to `sent`, its bytes to `sizes`."""
    for name, tensor in named:
        sent.append(name)
        sizes.append(tensor.numel() * 4)
        yield name, tensor.float()


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def measured_sync(sync: StageWeightSync, named, version: str) -> tuple[dict, int]:
    """Run one sync; returns (its stats, this rank's peak RSS growth in bytes during it)."""
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = status_kib("VmRSS")
    stats = sync.sync(named, version)
    return stats, (status_kib("VmHWM") - before) * 1024


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
    ap.add_argument("--kill-pgid", type=int, default=0, help="a server's process group, killed before sync 3")
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
                                  "reported_versions", "max_dlogprob", "sync", "rss_growth")}
    t = engine.topo
    layout = StageLayout(t.pp_rank, t.pp_size, t.is_sync_rank, t.dp_rank == 0, engine.object_group)
    sync = StageWeightSync(layout, WeightSyncConfig(backend="gloo", bucket_bytes=args.bucket_bytes))
    server_ids = server_lps = None
    if rank0:
        server_ids, server_lps, versions = ask_servers(urls, args.max_new_tokens)
        result["server_greedy"]["original"], result["server_versions"]["original"] = server_ids, versions
    sync.join(urls if rank0 else None)
    result["largest_param_bytes"] = max(p.numel() * p.element_size() for p in engine.gpt.parameters())
    result["max_dlogprob"]["original"] = server_logprob_gap(engine, server_ids, server_lps)
    batch = perturbation_batch(engine.dims.vocab_size)
    for version in ("1", "2"):
        key = f"v{version}"
        stats = engine.train_step(batch if rank0 else None, loss_fn)
        assert stats["skipped"] == 0.0, stats
        result["engine_greedy"][key], result["greedy_margin"][key] = engine_greedy(engine, PROMPTS, args.max_new_tokens)
        sent, sizes = [], []
        named = recording(engine.hf_weights(), sent, sizes) if layout.gathers else None
        result["sync"][key], result["rss_growth"][key] = measured_sync(sync, named, version)
        result["largest_sent_bytes"] = max(sizes) if layout.sender else 0
        every = [None] * dist.get_world_size()
        dist.all_gather_object(every, sent if layout.sender else [])
        result.setdefault("sent_names", [n for names in every for n in names])
        if rank0:
            result["reported_versions"][key] = reported_versions(urls)
            server_ids, server_lps, versions = ask_servers(urls, args.max_new_tokens)
            result["server_greedy"][key], result["server_versions"][key] = server_ids, versions
        result["max_dlogprob"][key] = server_logprob_gap(engine, server_ids, server_lps)
    if args.kill_pgid:
        assert engine.train_step(batch if rank0 else None, loss_fn)["skipped"] == 0.0
        if rank0:
            os.killpg(args.kill_pgid, signal.SIGKILL)
        sent, sizes = [], []
        stats = sync.sync(recording(engine.hf_weights(), sent, sizes) if layout.gathers else None, "3")
        if rank0:
            result["lost"], survivor = stats.get("rollout/servers_lost"), sync.urls
            server_ids, server_lps, versions = ask_servers(survivor, args.max_new_tokens)
            result["survivor"] = {"urls": survivor, "versions": versions + [reported_versions(survivor)]}
        gap = server_logprob_gap(engine, server_ids, server_lps)
        if rank0:
            result["survivor"]["max_dlogprob"] = gap
    mine = result if rank0 else {k: result[k] for k in ("rss_growth", "largest_param_bytes", "largest_sent_bytes")}
    Path(args.out, f"rank{dist.get_rank()}.json").write_text(json.dumps(mine))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
