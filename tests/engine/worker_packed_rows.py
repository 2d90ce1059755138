"""torchrun worker: a packed 4 x 2048-token row runs without any [T, T] tensor and equals unpacked.

Writes rank{r}.json with: core_attention (class name of the layers' core
attention), row_tokens (T of the packed row), largest_numel (the most elements
of any tensor an aten op produced during the packed forward and train step,
views included), max_dlogprob_unpacked (packed row vs each sequence in its
own row, fp32).
"""
import argparse
import json
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from areal_mega.engine.config import EngineConfig, OptimizerConfig, ParallelConfig
from areal_mega.engine.engine import Engine
from areal_mega.engine.packing import SeqBatch
from areal_mega.platform import init_distributed
from tests.engine.worker_engine import loss_fn


class LargestTensor(TorchDispatchMode):
    """Records the largest numel among the outputs of every aten op run inside it."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--num-seqs", type=int, default=4)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    init_distributed()
    row = args.seq_len * args.num_seqs
    cfg = EngineConfig(model_path=args.model, parallel=ParallelConfig(tp=1, pp=1),
                       optimizer=OptimizerConfig(lr=1e-4, distributed_optimizer=False),
                       max_tokens_per_micro_batch=row, dtype="fp32")
    engine = Engine(cfg)
    g = torch.Generator().manual_seed(0)
    half = args.seq_len // 2
    batch = SeqBatch([torch.randint(3, engine.dims.vocab_size, (args.seq_len,), generator=g).tolist()
                      for _ in range(args.num_seqs)], [half] * args.num_seqs,
                     {"advantages": [torch.randn(args.seq_len - half, generator=g) for _ in range(args.num_seqs)]})
    tracker = LargestTensor()
    with tracker:
        packed = engine.forward(batch)["logprobs"]
        engine.train_step(batch, loss_fn)
    # the same weights (a step later) give the same logprobs with one sequence per row
    packed = engine.forward(batch)["logprobs"]
    engine.cfg.max_tokens_per_micro_batch = args.seq_len
    single = engine.forward(batch)["logprobs"]
    result = {
        "core_attention": type(engine.gpt.decoder.layers[0].self_attention.core_attention).__name__,
        "row_tokens": row,
        "seq_len": args.seq_len,
        "largest_numel": tracker.largest,
        "max_dlogprob_unpacked": max((a - b).abs().max().item() for a, b in zip(packed, single)),
    }
    Path(args.out, f"rank{dist.get_rank()}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
