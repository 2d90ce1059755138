"""torchrun worker: one optimizer step with activation recomputation (engine.recompute) or without.

Writes rank{r}.json: loss, grad_norm and weights_after_step (HF name -> flat values, from each stage's
sync rank) of one train_step on `worker_engine.make_batch`, so runs with and without the settings can be
compared (Adam eps 1e-3 as in worker_engine: the update follows the gradient closely), and
checkpoint_calls: how often megatron's tensor_parallel.checkpoint ran (0 means nothing was recomputed).
"""
import argparse
import json
from pathlib import Path

import torch.distributed as dist

from areal_mega.engine.config import EngineConfig, OptimizerConfig, ParallelConfig, RecomputeConfig
from areal_mega.engine.engine import Engine
from areal_mega.platform import init_distributed
from tests.engine.worker_engine import counting_recompute, loss_fn, make_batch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tp", type=int, default=2)
    ap.add_argument("--pp", type=int, default=1)
    ap.add_argument("--recompute", default="none", help="engine.recompute.granularity")
    ap.add_argument("--recompute-method", default="uniform")
    ap.add_argument("--recompute-num-layers", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    init_distributed()
    cfg = EngineConfig(
        model_path=args.model,
        parallel=ParallelConfig(tp=args.tp, pp=args.pp),
        recompute=RecomputeConfig(args.recompute, args.recompute_method, args.recompute_num_layers),
        optimizer=OptimizerConfig(lr=1e-3, eps=1e-3, weight_decay=0.0, clip_grad=1e9, distributed_optimizer=True),
        max_tokens_per_micro_batch=64,
        dtype="fp32",
    )
    with counting_recompute() as calls:
        engine = Engine(cfg)
        batch = make_batch(engine.dims.vocab_size)
        stats = engine.train_step(batch if dist.get_rank() == 0 else None, loss_fn)
    weights = {name: t.flatten().tolist() for name, t in engine.hf_weights()}
    result = {"loss": stats["loss"], "grad_norm": stats["grad_norm"], "checkpoint_calls": calls[0],
              "weights_after_step": weights if engine.topo.is_sync_rank else {}}
    Path(args.out, f"rank{dist.get_rank()}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
