"""Supervised fine-tuning through the same engine: cross-entropy on response tokens.

    torchrun --nproc-per-node N -m areal_mega.engine.sft --model DIR --data FILE.jsonl \
        [--steps 100 --batch-size 16 --lr 1e-3 --tp 1 --pp 1 --out RUN_DIR]

FILE.jsonl holds one `{"prompt": str, "response": str}` object per line; the
response is followed by the tokenizer's EOS and only response tokens (EOS
included) carry loss. RUN_DIR gets `sft_metrics.json` (per-step NLL) and,
with `--save-hf`, the trained model as a HF directory.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import torch

from areal_mega.jsonl import JsonlError, iter_jsonl


def sft_loss(logprobs: torch.Tensor, entropy: torch.Tensor, fields: dict, mb, global_num_tokens: float,
             global_num_seqs: float) -> tuple[torch.Tensor, dict]:
    """Token-mean negative log-likelihood over the whole global batch.

    logprobs, entropy: [N] float32 of this micro-batch's response tokens.
    Returns the micro-batch's share of the global loss and its mean NLL.
    """
    nll = -logprobs
    return nll.sum() / global_num_tokens, {"nll": nll.mean().detach(), "entropy": entropy.mean().detach()}


def read_sft_jsonl(path: str | Path) -> list[tuple[str, str]]:
    """(prompt, response) pairs; a bad line raises JsonlError (a ValueError) naming `path:line` and the field."""
    pairs = []
    for lineno, record in iter_jsonl(path):
        for key in ("prompt", "response"):
            if not isinstance(record.get(key), str) or not record[key]:
                raise JsonlError(f"{path}:{lineno}: field '{key}' must be a non-empty string")
        pairs.append((record["prompt"], record["response"]))
    if not pairs:
        raise ValueError(f"{path}: no examples")
    return pairs


def tokenize_examples(tokenizer, pairs: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    """(prompt_ids, response_ids + [eos]) per example."""
    out = []
    for prompt, response in pairs:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        out.append((p, r))
    return out


def run_sft(engine, examples: list[tuple[list[int], list[int]]] | None, steps: int, batch_size: int,
            seed: int = 0) -> list[dict]:
    """`steps` optimizer steps on random batches of `examples` (read on global rank 0 only).

    Every rank calls this; returns each step's engine stats (`nll` is the
    token-mean NLL of the batch before the update).
    """
    import torch.distributed as dist

    from areal_mega.engine.packing import SeqBatch

    rng = random.Random(seed)
    history = []
    for _ in range(steps):
        batch = None
        if dist.get_rank() == 0:
            chosen = [examples[rng.randrange(len(examples))] for _ in range(batch_size)]
            batch = SeqBatch([p + r for p, r in chosen], [len(p) for p, _ in chosen])
        history.append(engine.train_step(batch, sft_loss))
    return history


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="HF model directory (with tokenizer)")
    ap.add_argument("--data", required=True, help="JSONL of {prompt, response}")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--pp", type=int, default=1)
    ap.add_argument("--max-tokens-per-micro-batch", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="outputs/sft")
    ap.add_argument("--save-hf", action="store_true", help="export the trained model to OUT/hf")
    args = ap.parse_args(argv)
    try:
        from areal_mega.models.hf_io import validate_hf_dir

        validate_hf_dir(args.model)
        pairs = read_sft_jsonl(args.data)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    import torch.distributed as dist

    from areal_mega.engine.config import EngineConfig, OptimizerConfig, ParallelConfig
    from areal_mega.engine.engine import Engine
    from areal_mega.engine.export import save_hf_checkpoint
    from areal_mega.models.tiny import load_tokenizer
    from areal_mega.platform import init_distributed, seed_everything

    init_distributed()
    seed_everything(args.seed)
    cfg = EngineConfig(
        model_path=args.model,
        parallel=ParallelConfig(tp=args.tp, pp=args.pp),
        optimizer=OptimizerConfig(lr=args.lr, beta2=0.999, eps=1e-8, weight_decay=0.0, total_steps=args.steps),
        max_tokens_per_micro_batch=args.max_tokens_per_micro_batch,
        seed=args.seed,
    )
    engine = Engine(cfg)
    examples = tokenize_examples(load_tokenizer(args.model), pairs) if dist.get_rank() == 0 else None
    history = run_sft(engine, examples, args.steps, args.batch_size, args.seed)
    out = Path(args.out)
    if dist.get_rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "sft_metrics.json").write_text(json.dumps(history))
        print(f"SFT {args.steps} steps: nll {history[0]['nll']:.4f} -> {history[-1]['nll']:.4f}")
    if args.save_hf:
        save_hf_checkpoint(engine, out / "hf")
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
