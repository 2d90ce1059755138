"""Export an engine's weights as a HF directory that transformers (and SGLang) load."""
from __future__ import annotations

import os
from pathlib import Path

import torch.distributed as dist

from areal_mega.models.hf_io import write_hf_index, write_hf_shard


def save_hf_checkpoint(engine, out_dir: str | Path) -> None:
    """Every rank calls this; each stage's (dp=0, tp=0) rank writes one safetensors shard.

    Written to a temporary folder first and renamed, so a reader never sees
    a half-written export.
    """
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if dist.get_rank() == 0:
        tmp.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    tensors = {name: t.clone() for name, t in engine.hf_weights()}
    local = {}
    if engine.topo.is_sync_rank:
        shard = write_hf_shard(tmp, tensors, engine.topo.pp_rank, engine.topo.pp_size)
        local = {name: shard for name in tensors}
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, local)
    if dist.get_rank() == 0:
        weight_map = {k: v for part in parts for k, v in part.items()}
        write_hf_index(tmp, weight_map, engine.cfg.model_path)
        if out_dir.exists():
            import shutil

            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    dist.barrier()
