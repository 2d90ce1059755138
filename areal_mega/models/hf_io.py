"""HF safetensors <-> Megatron stage weights, sharded over TP and PP.

`load_hf_weights` fills one stage's GPTModel from a HF directory (each rank
reads only the tensors it needs). `iter_hf_weights` yields a stage's
parameters as full HF tensors, gathering TP shards: the weight sync
broadcast and `save_hf_checkpoint` both consume it.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist

from areal_mega.models.hf_config import ModelDims, read_hf_dims
from areal_mega.models.name_map import hf_to_megatron, megatron_to_hf, param_map

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
)


def validate_hf_dir(model_dir: str | Path):
    """Raise FileNotFoundError / ValueError naming what is missing or unsupported; returns ModelDims."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: not a directory")
    dims = read_hf_dims(model_dir)
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"{index}: not a safetensors index ({e})") from None
        missing = sorted({f for f in weight_map.values() if not (model_dir / f).is_file()})
        if missing:
            raise FileNotFoundError(f"{model_dir}: safetensors files listed in {index.name} are missing: {missing}")
    elif not (model_dir / "model.safetensors").is_file():
        raise FileNotFoundError(f"{model_dir}: no model.safetensors or model.safetensors.index.json")
    return dims


def _safetensors_index(model_dir: Path) -> dict[str, Path]:
    """HF tensor name -> file holding it."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {name: model_dir / f for name, f in weight_map.items()}
    single = model_dir / "model.safetensors"
    if not single.is_file():
        raise FileNotFoundError(
            f"{model_dir}: no model.safetensors or model.safetensors.index.json "
            "(only safetensors checkpoints are supported)"
        )
    from safetensors import safe_open

    with safe_open(str(single), framework="pt") as f:
        return {name: single for name in f.keys()}


def _unwrap(model):
    while hasattr(model, "module"):
        model = model.module
    return model


@torch.no_grad()
def load_hf_weights(model, model_dir: str | Path, dims: ModelDims, tp_rank: int, tp_size: int, layer_offset: int) -> None:
    """Copy this rank's shards of the HF weights into `model` (one pipeline stage)."""
    from safetensors import safe_open

    model_dir = Path(model_dir)
    index = _safetensors_index(model_dir)
    handles: dict[Path, object] = {}

    def get(name: str) -> torch.Tensor:
        if name not in index:
            raise KeyError(f"{model_dir}: tensor '{name}' missing from the checkpoint")
        path = index[name]
        if path not in handles:
            handles[path] = safe_open(str(path), framework="pt")
        return handles[path].get_tensor(name)

    for name, param in _unwrap(model).named_parameters():
        pm = param_map(name, dims, layer_offset)
        shard = hf_to_megatron(pm, [get(n) for n in pm.hf_names], dims, tp_rank, tp_size)
        if shard.shape != param.shape:
            raise ValueError(f"{name}: HF shard shape {tuple(shard.shape)} != Megatron {tuple(param.shape)}")
        param.copy_(shard.to(param.dtype))


@torch.no_grad()
def iter_hf_weights(model, dims: ModelDims, tp_group, layer_offset: int, skip_tied_output: bool = True) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield this stage's parameters as full HF tensors (all TP ranks must iterate together).

    With tied embeddings the last stage's copy of the embedding (`output_layer`)
    is skipped, since the first stage yields `model.embed_tokens.weight`.
    """
    tp_size = dist.get_world_size(tp_group) if tp_group is not None else 1
    for name, param in _unwrap(model).named_parameters():
        pm = param_map(name, dims, layer_offset)
        if skip_tied_output and name == "output_layer.weight" and dims.tie_word_embeddings:
            continue
        data = param.detach()
        if tp_size > 1 and pm.kind != "replica":
            shards = [torch.empty_like(data) for _ in range(tp_size)]
            dist.all_gather(shards, data.contiguous(), group=tp_group)
        else:
            shards = [data]
        yield from megatron_to_hf(pm, shards, dims)


def copy_tokenizer_files(src: str | Path, dst: str | Path) -> None:
    for f in TOKENIZER_FILES:
        if (Path(src) / f).is_file():
            shutil.copy(Path(src) / f, Path(dst) / f)


def write_hf_shard(out_dir: str | Path, tensors: dict[str, torch.Tensor], shard_id: int, num_shards: int) -> str:
    """Write one safetensors shard (one per pipeline stage); returns its file name."""
    from safetensors.torch import save_file

    name = f"model-{shard_id + 1:05d}-of-{num_shards:05d}.safetensors"
    save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(Path(out_dir) / name), metadata={"format": "pt"})
    return name


def write_hf_index(out_dir: str | Path, weight_map: dict[str, str], src_dir: str | Path) -> None:
    """Index + config + tokenizer files, so transformers can load `out_dir`."""
    out_dir = Path(out_dir)
    (out_dir / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": dict(sorted(weight_map.items()))}, indent=2)
    )
    shutil.copy(Path(src_dir) / "config.json", out_dir / "config.json")
    copy_tokenizer_files(src_dir, out_dir)
