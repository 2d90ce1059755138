"""torchrun worker for checkpoint tests: train steps, save, resume in a new process group.

Each step's batch is drawn from python `random` (lengths), torch (tokens) and
numpy (advantages) on rank 0, so a resume that loses any RNG state trains on
different data and gives different losses.

Writes rank{r}.json: losses (per step run here), extra (what load returned),
weights (HF name -> flat values at the end, from each stage's sync rank).
"""
import argparse
import json
import random
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from areal_mega.engine.checkpoint import load_checkpoint, save_checkpoint
from areal_mega.engine.config import EngineConfig, OptimizerConfig, ParallelConfig
from areal_mega.engine.engine import Engine
from areal_mega.engine.packing import SeqBatch
from areal_mega.platform import init_distributed, seed_everything
from tests.engine.fused_adam_layout import use_fused_adam_layout
from tests.engine.worker_engine import loss_fn


def draw_batch(vocab_size: int) -> SeqBatch:
    lens = [random.randint(6, 24) for _ in range(5)]
    seqs = [torch.randint(3, vocab_size, (L,)).tolist() for L in lens]
    prompt_lens = [L // 2 for L in lens]
    adv = [torch.from_numpy(np.random.randn(L - p).astype(np.float32)) for L, p in zip(lens, prompt_lens)]
    return SeqBatch(seqs, prompt_lens, {"advantages": adv})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--pp", type=int, default=1)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--save-at", type=int, nargs="*", default=[])
    ap.add_argument("--keep-last", type=int, default=1)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--fused-adam-layout", action="store_true", help="Adam keeps `step` in param_groups (TE/apex)")
    ap.add_argument("--no-distributed-optimizer", action="store_true")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.fused_adam_layout:
        use_fused_adam_layout()
    init_distributed()
    seed_everything(1234)
    cfg = EngineConfig(
        model_path=args.model,
        parallel=ParallelConfig(tp=args.tp, pp=args.pp),
        optimizer=OptimizerConfig(lr=1e-2, weight_decay=0.01, warmup_fraction=0.5, total_steps=8,
                                  lr_schedule="cosine", clip_grad=1.0,
                                  distributed_optimizer=not args.no_distributed_optimizer),
        max_tokens_per_micro_batch=48,
    )
    engine = Engine(cfg)
    start, extra = 0, None
    if args.resume:
        extra = load_checkpoint(engine, args.ckpt)
        start = extra["step"]
    losses = []
    for step in range(start + 1, args.steps + 1):
        batch = draw_batch(engine.dims.vocab_size) if dist.get_rank() == 0 else None
        losses.append(engine.train_step(batch, loss_fn)["loss"])
        if step in args.save_at:
            save_checkpoint(engine, args.ckpt, step, {"step": step, "weight_version": step, "sampler": {"epoch": 0, "pos": 4 * step}},
                            keep_last=args.keep_last)
    weights = {name: t.flatten().tolist() for name, t in engine.hf_weights()}
    result = {"losses": losses, "extra": extra, "weights": weights if engine.topo.is_sync_rank else {},
              "lr": engine.optimizer.param_groups[0]["lr"]}
    Path(args.out, f"rank{dist.get_rank()}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
