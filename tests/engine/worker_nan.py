"""torchrun worker: a NaN loss skips the optimizer step on every rank and training goes on."""
import argparse
import json
from pathlib import Path

import torch
import torch.distributed as dist

from areal_mega.engine.config import EngineConfig, OptimizerConfig, ParallelConfig
from areal_mega.engine.engine import Engine
from areal_mega.platform import init_distributed
from tests.engine.worker_engine import loss_fn, make_batch


def nan_on_rank0_loss(logprobs, entropy, fields, mb, global_num_tokens, global_num_seqs):
    loss, stats = loss_fn(logprobs, entropy, fields, mb, global_num_tokens, global_num_seqs)
    if dist.get_rank() == 0:
        loss = loss * float("nan")
    return loss, stats


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    init_distributed()
    cfg = EngineConfig(model_path=args.model, parallel=ParallelConfig(tp=2),
                       optimizer=OptimizerConfig(lr=1e-3, weight_decay=0.0), max_tokens_per_micro_batch=64)
    engine = Engine(cfg)
    batch = make_batch(engine.dims.vocab_size)
    before = {n: t.clone() for n, t in engine.hf_weights()}
    skipped = engine.train_step(batch, nan_on_rank0_loss)
    after_nan = {n: t.clone() for n, t in engine.hf_weights()}
    ok = engine.train_step(batch, loss_fn)
    after_ok = {n: t.clone() for n, t in engine.hf_weights()}
    result = {
        "skipped": skipped["skipped"],
        "unchanged_after_nan": all(torch.equal(before[n], after_nan[n]) for n in before),
        "next_step_skipped": ok["skipped"],
        "next_step_moves": any(not torch.equal(before[n], after_ok[n]) for n in before),
        "next_step_finite": all(bool(torch.isfinite(t).all()) for t in after_ok.values()),
        "optimizer_steps": engine.steps,
    }
    Path(args.out, f"rank{dist.get_rank()}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
