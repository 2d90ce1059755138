"""Convert a HF directory to an areal-mega Megatron checkpoint and back.

    torchrun --nproc-per-node T*P -m areal_mega.cli.convert --hf DIR --out CKPT --tp T --pp P
    torchrun --nproc-per-node T*P -m areal_mega.cli.convert --to-hf --ckpt CKPT --out DIR [--hf BASE]

HF -> Megatron writes `CKPT/step_000000` in the format of
`areal_mega.engine.checkpoint` (weights only: a run that resumes from it starts
a fresh optimizer) at the TP x PP layout it was run with. Megatron -> HF runs
at the checkpoint's layout (its meta.json), builds the model from BASE's
config.json (default: the HF directory the checkpoint was made from), loads
the checkpoint's weights and exports them with
`areal_mega.engine.export.save_hf_checkpoint` (config and tokenizer copied
from BASE). Exit code 2 with a message naming the missing file on bad input.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _engine(model_dir: str, tp: int, pp: int):
    from areal_mega.engine.config import EngineConfig, ParallelConfig
    from areal_mega.engine.engine import Engine

    return Engine(EngineConfig(model_path=model_dir, parallel=ParallelConfig(tp=tp, pp=pp), dtype="fp32"), trainable=False)


def hf_to_megatron(hf_dir: str, ckpt_root: str, tp: int, pp: int) -> Path:
    """Every rank calls this; returns the checkpoint step directory."""
    from areal_mega.engine.checkpoint import save_checkpoint

    engine = _engine(hf_dir, tp, pp)
    return save_checkpoint(engine, ckpt_root, 0, {"step": 0, "converted_from": str(hf_dir)}, keep_last=0)


def megatron_to_hf(ckpt_root: str, out_dir: str, base_dir: str | None = None) -> None:
    """Every rank calls this (world size = the checkpoint's TP x PP x DP)."""
    from areal_mega.engine.checkpoint import latest_checkpoint, load_checkpoint
    from areal_mega.engine.export import save_hf_checkpoint

    step_dir = latest_checkpoint(ckpt_root)
    if step_dir is None:
        raise FileNotFoundError(f"{ckpt_root}: no complete checkpoint (step_N/meta.json)")
    meta = json.loads((step_dir / "meta.json").read_text())
    engine = _engine(base_dir or meta["model_path"], meta["layout"]["tp"], meta["layout"]["pp"])
    load_checkpoint(engine, ckpt_root)
    save_hf_checkpoint(engine, out_dir)


def _preflight(args) -> None:
    """Check inputs before any process group exists, so every rank fails with the same message."""
    from areal_mega.engine.checkpoint import latest_checkpoint
    from areal_mega.models.hf_io import validate_hf_dir

    if not args.to_hf:
        if not args.hf:
            raise ValueError("--hf DIR is required (HF -> Megatron)")
        validate_hf_dir(args.hf)
        return
    if not args.ckpt:
        raise ValueError("--ckpt CKPT is required with --to-hf")
    step_dir = latest_checkpoint(args.ckpt)
    if step_dir is None:
        raise FileNotFoundError(f"{args.ckpt}: no complete checkpoint (step_N/meta.json)")
    base = args.hf or json.loads((step_dir / "meta.json").read_text())["model_path"]
    validate_hf_dir(base)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hf", default=None, help="HF directory (input; with --to-hf: config/tokenizer base)")
    ap.add_argument("--ckpt", default=None, help="checkpoint root (input of --to-hf)")
    ap.add_argument("--out", required=True, help="checkpoint root, or HF directory with --to-hf")
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--pp", type=int, default=1)
    ap.add_argument("--to-hf", action="store_true", help="Megatron checkpoint -> HF directory")
    args = ap.parse_args(argv)
    try:
        _preflight(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    import torch.distributed as dist

    from areal_mega.platform import init_distributed

    init_distributed()
    if args.to_hf:
        megatron_to_hf(args.ckpt, args.out, args.hf)
    else:
        hf_to_megatron(args.hf, args.out, args.tp, args.pp)
    if dist.get_rank() == 0:
        print(f"wrote {args.out}")
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
