"""Check a HF model directory on our Megatron model against transformers.

    torchrun --nproc-per-node N -m areal_mega.cli.check --hf DIR --tp T --pp P [--tol 1e-4]

Loads DIR at TP=T x PP=P (N = T * P; an Engine with trainable=False), runs
random token sequences through it and through transformers (fp32), prints the
max |Δ per-token logprob| and exits 1 above `--tol`, 2 on bad input (a
missing file or an unsupported architecture, named in the message). The
hidden `--reference DIR` compares against another HF directory (the CLI's own
test of its failure path).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from areal_mega.models.hf_io import validate_hf_dir


def random_batch(vocab_size: int, num_seqs: int, seq_len: int, seed: int):
    """`num_seqs` random sequences of lengths in [seq_len/2, seq_len]; every token after the first is scored."""
    from areal_mega.engine.packing import SeqBatch

    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(max(2, seq_len // 2), seq_len + 1, (num_seqs,), generator=g).tolist()
    return SeqBatch([torch.randint(0, vocab_size, (n,), generator=g).tolist() for n in lens], [1] * num_seqs)


@torch.no_grad()
def transformers_logprobs(model_dir: str | Path, batch) -> list[torch.Tensor]:
    """Per-token logprobs [len_i - 1] float32 of every sequence under transformers in fp32."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    out = []
    for ids in batch.input_ids:
        logits = model(torch.tensor([ids])).logits[0, :-1].double()
        out.append(torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0].float())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hf", required=True, help="HF model directory")
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--pp", type=int, default=1)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--num-seqs", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    try:
        dims = validate_hf_dir(args.hf)
        if args.reference:
            validate_hf_dir(args.reference)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    import torch.distributed as dist

    from areal_mega.engine.config import EngineConfig, ParallelConfig
    from areal_mega.engine.engine import Engine
    from areal_mega.platform import init_distributed

    init_distributed()
    cfg = EngineConfig(model_path=str(args.hf), parallel=ParallelConfig(tp=args.tp, pp=args.pp), dtype="fp32",
                       max_tokens_per_micro_batch=max(args.seq_len, 1))
    engine = Engine(cfg, trainable=False)
    batch = random_batch(dims.vocab_size, args.num_seqs, args.seq_len, args.seed)
    ours = engine.forward(batch if dist.get_rank() == 0 else None)  # results on rank 0 only
    box = [None]
    if dist.get_rank() == 0:
        ref = transformers_logprobs(args.reference or args.hf, batch)
        box = [max((a - b).abs().max().item() for a, b in zip(ours["logprobs"], ref))]
    dist.broadcast_object_list(box, src=0)
    max_diff = box[0]
    ok = max_diff <= args.tol
    if dist.get_rank() == 0:
        print(f"{args.hf} at tp={args.tp} pp={args.pp}: max |dlogprob| = {max_diff:.3e} over "
              f"{batch.num_response_tokens()} tokens (tol {args.tol:g}): {'OK' if ok else 'FAIL'}")
    dist.destroy_process_group()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
