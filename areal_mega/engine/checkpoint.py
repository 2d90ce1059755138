"""Resumable training checkpoints of an `Engine`: model, optimizer, LR schedule, RNG, caller state.

Format: per-rank `torch.save` files, not megatron-core `dist_checkpointing`.
We tried `dist_checkpointing.save` on CPU/gloo (megatron-core 0.16.1): the
optimizer's default `fully_sharded_model_space` sharding raises
"ShardedTensor.flattened_range is not supported", and with `dp_reshardable`
the save hangs on gloo. So each rank writes what it holds:

    CKPT_ROOT/
      latest                      "step_000010" (written last, atomically)
      step_000010/
        meta.json                 layout (tp, pp, dp, world size), step, model dims
        extra.pt                  the caller's `extra` (sampler, step, weight version, ...)
        rank{tp}_{pp}_{dp}.pt     this rank's model shard, optimizer state, LR schedule, RNG

A rank file holds: `model` (this stage's TP shard, `GPTModel.state_dict()`),
`optimizer` (per chained optimizer: its `state_dict()` and, for the
DistributedOptimizer, this DP rank's main params + Adam moments by parameter
name, each with its [start, end) range in the flattened parameter),
`scheduler`, `engine_steps` and `rng` (python, numpy, torch CPU, CUDA when
present, Megatron's model-parallel RNG tracker).

Loading needs the same TP x PP layout but not the same DP size (the number of
nodes may change between runs): model weights are the same on every DP rank,
and each rank assembles its new range of the distributed optimizer's state
from the saved ranges of all DP files of its (tp, pp) (memory-mapped, so only
the needed slices are read). RNG states come from the file of DP rank
`dp % saved_dp`. To change TP or PP, export to HF
(`python -m areal_mega.cli.convert --to-hf`) and load that at the new layout.

A checkpoint is written to `step_N.tmp` and renamed to `step_N` once every
rank's file is on disk, so a crash mid-save leaves only a `.tmp` directory,
which loading ignores. Every rank must see the same file system.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

_STEP_DIR = re.compile(r"^step_(\d+)$")


def _step_dir(ckpt_root: Path, step: int) -> Path:
    return ckpt_root / f"step_{step:06d}"


def _rank_file(engine) -> str:
    t = engine.topo
    return f"rank{t.tp_rank}_{t.pp_rank}_{t.dp_rank}.pt"


def _layout(engine) -> dict:
    t = engine.topo
    return {"tp": t.tp_size, "pp": t.pp_size, "dp": t.dp_size, "world_size": dist.get_world_size()}


def _rng_state() -> dict:
    from megatron.core import tensor_parallel

    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "tracker": {k: v.clone() for k, v in tensor_parallel.get_cuda_rng_tracker().get_states().items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    from megatron.core import tensor_parallel

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])
    if torch.cuda.is_available() and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])


def _chained(optimizer) -> list:
    return list(getattr(optimizer, "chained_optimizers", [optimizer]))


def _param_range(opt, param) -> tuple[int, int]:
    """[start, end) of the flattened `param` that this DP rank's DistributedOptimizer owns."""
    r = opt._get_model_param_range_map(param)["param"]
    return r.start, r.end


def has_stepped(optimizer: torch.optim.Optimizer) -> bool:
    """Whether a torch optimizer (the one inside megatron's wrapper) has taken a step.

    torch's Adam/AdamW keep `step` in each parameter's state; TE's and apex's
    FusedAdam (what megatron builds when either is installed) keep it in the
    param groups and only `exp_avg`/`exp_avg_sq` per parameter. Either counts.
    """
    return (any("step" in g for g in optimizer.param_groups if g["params"])
            or any("step" in st for st in optimizer.state.values()))


def _optimizer_state(engine) -> list[dict]:
    """Per chained optimizer: its state_dict and, if distributed, this rank's param state by name.

    param_state[name] = {"range": (start, end), "param": [end - start] float32 main param,
    "exp_avg": ..., "exp_avg_sq": ...} (the flattened parameter's slice this DP rank owns).
    """
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    names = {p: n for n, p in engine.gpt.named_parameters()}
    out = []
    for opt in _chained(engine.optimizer):
        # before the first step there is no Adam `step` (megatron's state_dict() fails on that)
        entry = {"state_dict": opt.state_dict() if has_stepped(opt.optimizer) else None}
        if isinstance(opt, DistributedOptimizer):
            entry["param_state"] = {
                names[p]: {"range": _param_range(opt, p),
                           **{k: v.detach().clone() for k, v in opt._get_main_param_and_optimizer_states(p).items()}}
                for p in opt.model_param_group_index_map
            }
        out.append(entry)
    return out


def _reshard_param_state(opt, names: dict, shards: list[list[dict]], index: int) -> dict:
    """This DP rank's param state of chained optimizer `index`, cut from every saved DP rank's slices.

    shards: per saved DP rank, its list of optimizer entries (as `_optimizer_state` wrote them).
    """
    out = {}
    for p in opt.model_param_group_index_map:
        name = names[p]
        start, end = _param_range(opt, p)
        mine = None
        for saved in shards:
            piece = saved[index]["param_state"].get(name)
            if piece is None:
                continue
            s, e = piece["range"]
            lo, hi = max(s, start), min(e, end)
            if lo >= hi:
                continue
            if mine is None:  # 0-d entries (Adam's `step`) are the same on every rank: taken whole
                mine = {k: v.clone() if v.dim() == 0 else torch.empty(end - start, dtype=v.dtype)
                        for k, v in piece.items() if k != "range"}
                covered = 0
            for k, v in mine.items():
                if v.dim():
                    v[lo - start:hi - start] = piece[k][lo - s:hi - s]
            covered += hi - lo
        if mine is None or covered != end - start:
            raise ValueError(f"checkpoint: the saved DP shards do not cover {name}[{start}:{end}]")
        out[name] = mine
    return out


def _load_optimizer_state(engine, saved: list[dict], dp_shards: list[list[dict]] | None = None) -> None:
    """Restore the optimizer; `dp_shards` (every saved DP rank's entries) when the DP size changed."""
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    params = dict(engine.gpt.named_parameters())
    names = {p: n for n, p in params.items()}
    chained = _chained(engine.optimizer)
    if len(saved) != len(chained):
        raise ValueError(f"checkpoint has {len(saved)} optimizers, the engine {len(chained)}")
    for index, (opt, entry) in enumerate(zip(chained, saved)):
        if entry["state_dict"] is not None:  # None: saved before the first step, nothing to restore
            opt.load_state_dict(entry["state_dict"])
        if isinstance(opt, DistributedOptimizer):
            # megatron-core 0.16.1 (no apex/TE) gives every parameter's Adam state the SAME
            # `step` tensor on load; torch Adam then bumps it once per parameter per step and
            # the bias correction runs ahead. Give each parameter its own copy.
            for param_state in opt.optimizer.state.values():
                if torch.is_tensor(param_state.get("step")):
                    param_state["step"] = param_state["step"].clone()
            mine = entry["param_state"] if dp_shards is None else _reshard_param_state(opt, names, dp_shards, index)
            with torch.no_grad():  # copies into the optimizer's own tensors (device and dtype kept)
                for name, tensors in mine.items():
                    opt._set_main_param_and_optimizer_states(
                        params[name], {k: v for k, v in tensors.items() if k != "range"})


def save_checkpoint(engine, ckpt_root: str | Path, step: int, extra: dict | None = None, keep_last: int = 3) -> Path:
    """Every rank calls this. Writes `ckpt_root/step_{step:06d}` atomically; returns its path.

    extra: anything picklable the trainer needs to continue (sampler state,
      step, weight version, ...); returned unchanged by `load_checkpoint`.
    keep_last: complete checkpoints kept (older ones are deleted); 0 keeps all.
    """
    ckpt_root = Path(ckpt_root)
    final = _step_dir(ckpt_root, step)
    tmp = final.with_name(final.name + ".tmp")
    rank = dist.get_rank()
    if rank == 0:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    dist.barrier()
    state = {
        "model": engine.gpt.state_dict(),
        "optimizer": _optimizer_state(engine) if engine.trainable else None,
        "scheduler": engine.scheduler.state_dict() if engine.scheduler is not None else None,
        "engine_steps": engine.steps,
        "rng": _rng_state(),
    }
    torch.save(state, tmp / _rank_file(engine))
    dist.barrier()
    if rank == 0:
        torch.save(extra or {}, tmp / "extra.pt")
        meta = {"step": step, "layout": _layout(engine), "model_path": str(engine.cfg.model_path),
                "dims": engine.dims.__dict__, "format": "areal_mega per-rank torch.save v2"}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        pointer = ckpt_root / "latest.tmp"
        pointer.write_text(final.name)
        os.replace(pointer, ckpt_root / "latest")
        if keep_last > 0:
            for old in complete_checkpoints(ckpt_root)[:-keep_last]:
                shutil.rmtree(old)
    dist.barrier()
    return final


def complete_checkpoints(ckpt_root: str | Path) -> list[Path]:
    """`step_N` directories with a meta.json, oldest first (`.tmp` directories excluded)."""
    ckpt_root = Path(ckpt_root)
    if not ckpt_root.is_dir():
        return []
    found = [(int(m.group(1)), d) for d in ckpt_root.iterdir()
             if (m := _STEP_DIR.match(d.name)) and (d / "meta.json").is_file()]
    return [d for _, d in sorted(found)]


def latest_checkpoint(ckpt_root: str | Path) -> Path | None:
    """The directory named by `latest` if complete, else the newest complete `step_N`; None if none."""
    ckpt_root = Path(ckpt_root)
    pointer = ckpt_root / "latest"
    if pointer.is_file():
        named = ckpt_root / pointer.read_text().strip()
        if _STEP_DIR.match(named.name) and (named / "meta.json").is_file():
            return named
    complete = complete_checkpoints(ckpt_root)
    return complete[-1] if complete else None


def load_checkpoint(engine, ckpt_root: str | Path) -> dict | None:
    """Every rank calls this. Restores the latest complete checkpoint; returns its `extra` (None if none).

    The DP size may differ from the saved one (see the module docstring). Raises
    ValueError naming `parallel.tp` / `parallel.pp` when those differ, and
    FileNotFoundError naming a missing rank file.
    """
    ckpt_root = Path(ckpt_root)
    box = [str(latest_checkpoint(ckpt_root) or "") if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    if not box[0]:
        return None
    path = Path(box[0])
    meta = json.loads((path / "meta.json").read_text())
    saved, mine = meta["layout"], _layout(engine)
    if (saved["tp"], saved["pp"]) != (mine["tp"], mine["pp"]):
        raise ValueError(
            f"{path}: saved with parallel.tp={saved['tp']} parallel.pp={saved['pp']} dp={saved['dp']} "
            f"(world size {saved['world_size']}), this job has parallel.tp={mine['tp']} parallel.pp={mine['pp']} "
            f"dp={mine['dp']} (world size {mine['world_size']}); convert through HF to change TP or PP"
        )
    t = engine.topo
    files = [path / f"rank{t.tp_rank}_{t.pp_rank}_{d}.pt" for d in range(saved["dp"])]
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"{path}: missing {f.name} (an incomplete checkpoint)")
    resharded = saved["dp"] != mine["dp"]
    state = torch.load(files[t.dp_rank % saved["dp"]], map_location="cpu", weights_only=False, mmap=True)
    with torch.no_grad():
        engine.gpt.load_state_dict(state["model"])
    if engine.trainable and state["optimizer"] is not None:
        dp_shards = None
        if resharded:
            dp_shards = [torch.load(f, map_location="cpu", weights_only=False, mmap=True)["optimizer"] for f in files]
        _load_optimizer_state(engine, state["optimizer"], dp_shards)
    if engine.scheduler is not None and state["scheduler"] is not None:
        engine.scheduler.load_state_dict(state["scheduler"])
    engine.steps = state["engine_steps"]
    _set_rng_state(state["rng"])
    extra = torch.load(path / "extra.pt", map_location="cpu", weights_only=False)
    dist.barrier()
    return extra
