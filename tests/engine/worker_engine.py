"""torchrun worker for engine tests: logprobs vs transformers, packing, one optimizer step, HF export.

Writes rank{r}.json with: max_dlogprob (vs transformers, fp32), max_dlogprob_unpacked
(packed rows vs one sequence per row), weights_after_step (HF name -> flat values after one Adam
step, from the sync rank of each stage; Adam eps 1e-3 so near-zero gradients do not turn
rounding noise into full-size updates) and the exported HF dir.
"""
import argparse
import contextlib
import json
from pathlib import Path

import torch
import torch.distributed as dist

from areal_mega.engine.config import EngineConfig, OptimizerConfig, ParallelConfig
from areal_mega.engine.engine import Engine
from areal_mega.engine.export import save_hf_checkpoint
from areal_mega.engine.packing import SeqBatch
from areal_mega.platform import init_distributed


def make_batch(vocab_size: int, n: int = 7, seed: int = 0) -> SeqBatch:
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(6, 30, (n,), generator=g).tolist()
    seqs = [torch.randint(3, vocab_size, (L,), generator=g).tolist() for L in lens]
    prompt_lens = [int(torch.randint(1, L - 1, (1,), generator=g)) for L in lens]
    adv = [torch.randn(L - p, generator=g) for L, p in zip(lens, prompt_lens)]
    return SeqBatch(seqs, prompt_lens, {"advantages": adv})


def reference_logprobs(model_dir: str, batch: SeqBatch, temperature: float) -> list[torch.Tensor]:
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    out = []
    with torch.no_grad():
        for ids, p in zip(batch.input_ids, batch.prompt_lens):
            logits = hf(torch.tensor([ids])).logits[0].double() / temperature
            lp = torch.log_softmax(logits, -1)[p - 1 : -1].gather(1, torch.tensor(ids[p:])[:, None])[:, 0]
            out.append(lp.float())
    return out


@contextlib.contextmanager
def counting_recompute():
    """Count calls of megatron's tensor_parallel.checkpoint (what its recompute goes through) inside the
    block; yields the one-element counter."""
    from megatron.core import tensor_parallel

    calls = [0]
    checkpoint = tensor_parallel.checkpoint

    def counted(*a, **k):
        calls[0] += 1
        return checkpoint(*a, **k)

    tensor_parallel.checkpoint = counted
    try:
        yield calls
    finally:
        tensor_parallel.checkpoint = checkpoint


def loss_fn(logprobs, entropy, fields, mb, global_num_tokens, global_num_seqs):
    loss = -(logprobs * fields["advantages"]).sum() / global_num_tokens
    return loss, {"entropy": entropy.mean()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--pp", type=int, default=1)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--dtype", default="auto", help="engine.dtype: auto, fp32 or bf16")
    ap.add_argument("--export", default="")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    init_distributed()
    cfg = EngineConfig(
        model_path=args.model,
        parallel=ParallelConfig(tp=args.tp, pp=args.pp),
        optimizer=OptimizerConfig(lr=1e-3, eps=1e-3, weight_decay=0.0, clip_grad=1e9, distributed_optimizer=True),
        max_tokens_per_micro_batch=64,
        dtype=args.dtype,
    )
    engine = Engine(cfg)
    vocab = engine.dims.vocab_size
    batch = make_batch(vocab)
    result = {}
    packed = engine.forward(batch if dist.get_rank() == 0 else None, temperature=args.temperature)
    engine.cfg.max_tokens_per_micro_batch = 30  # forces one sequence per row for the long ones
    single = [engine.forward(batch.select([i]), temperature=args.temperature) for i in range(len(batch))]
    engine.cfg.max_tokens_per_micro_batch = 64
    box = [None]
    if dist.get_rank() == 0:  # results come back to rank 0 only; it shares the figures
        ref = reference_logprobs(args.model, batch, args.temperature)
        box = [{"max_dlogprob": max((a - b).abs().max().item() for a, b in zip(packed["logprobs"], ref)),
                "min_entropy": min(e.min().item() for e in packed["entropy"]),
                "max_dlogprob_unpacked": max((a - s["logprobs"][0]).abs().max().item()
                                             for a, s in zip(packed["logprobs"], single))}]
    dist.broadcast_object_list(box, src=0)
    result.update(box[0])
    stats = engine.train_step(batch, loss_fn)
    result["step_loss"] = stats["loss"]
    weights = {name: t.flatten().tolist() for name, t in engine.hf_weights()}
    result["weights_after_step"] = weights if engine.topo.is_sync_rank else {}
    if args.export:
        save_hf_checkpoint(engine, args.export)
    Path(args.out, f"rank{dist.get_rank()}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
