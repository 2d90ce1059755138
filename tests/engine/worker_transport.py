"""torchrun worker: bytes each rank receives while the engine moves one RL step's data.

Wraps torch.distributed's point-to-point and collective calls, while the engine moves data, in a counting shim (received payload:
tensor bytes on every rank but the sender/root, pickled size for object collectives), runs
`Engine.forward` and `Engine.train_step` on one batch, and writes rank{r}.json with: received
(bytes per call), share_bytes (this rank's share: int64 ids + lengths, float32 fields), batch_bytes
(the whole batch), and rank 0's results (logprobs of both calls, to compare with the local model).
"""
import argparse
import json
import pickle
from pathlib import Path

import torch
import torch.distributed as dist

from areal_mega.engine.config import EngineConfig, OptimizerConfig, ParallelConfig
from areal_mega.engine.engine import Engine
from areal_mega.engine.packing import partition_balanced
from areal_mega.platform import init_distributed
from tests.engine.worker_engine import loss_fn, make_batch

COUNT = {"bytes": 0, "active": 0}


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def install_counting_shim() -> None:
    """Count the payload this rank receives in the torch.distributed calls of the engine's data movement
    (`Engine._share`, `_results`, `_gather`)."""
    def wrap(name, received):
        orig = getattr(dist, name)

        def shim(*args, **kwargs):
            out = orig(*args, **kwargs)
            if COUNT["active"]:
                COUNT["bytes"] += received(out, *args, **kwargs)
            return out
        setattr(dist, name, shim)

    for method in ("_share", "_results", "_gather"):  # the engine's data movement, not the model's TP traffic
        orig_method = getattr(Engine, method)

        def counted(self, *args, _orig=orig_method, **kwargs):
            COUNT["active"] += 1
            try:
                return _orig(self, *args, **kwargs)
            finally:
                COUNT["active"] -= 1
        setattr(Engine, method, counted)

    me = lambda: dist.get_rank()  # noqa: E731
    wrap("recv", lambda out, t, *a, **k: _nbytes(t))
    wrap("irecv", lambda out, t, *a, **k: _nbytes(t))
    wrap("broadcast", lambda out, t, src=None, *a, **k: 0 if (src if src is not None else k.get("src")) == me()
         else _nbytes(t))
    wrap("all_reduce", lambda out, t, *a, **k: _nbytes(t))
    wrap("all_gather", lambda out, ts, t, *a, **k: sum(_nbytes(x) for x in ts) - _nbytes(t))
    wrap("broadcast_object_list", lambda out, objs, src=0, *a, **k: 0 if src == me()
         else len(pickle.dumps(objs)))
    wrap("all_gather_object", lambda out, objs, obj, *a, **k: sum(len(pickle.dumps(o)) for o in objs)
         - len(pickle.dumps(obj)))
    wrap("scatter_object_list", lambda out, objs, *a, **k: len(pickle.dumps(objs)))
    wrap("gather_object", lambda out, obj, objs=None, *a, **k: 0 if objs is None
         else sum(len(pickle.dumps(o)) for o in objs) - len(pickle.dumps(obj)))


def batch_bytes(batch) -> int:
    ids = sum(len(i) for i in batch.input_ids) + 2 * len(batch)
    return 8 * ids + 4 * len(batch.token_fields) * batch.num_response_tokens()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    init_distributed()
    cfg = EngineConfig(model_path=args.model, parallel=ParallelConfig(tp=args.tp, pp=1), dtype="fp32",
                       optimizer=OptimizerConfig(lr=1e-3, weight_decay=0.0, clip_grad=1e9),
                       max_tokens_per_micro_batch=256)
    engine = Engine(cfg)
    batch = make_batch(engine.dims.vocab_size, n=64)
    dp = dist.get_world_size() // args.tp
    mine = partition_balanced([len(i) for i in batch.input_ids], dp)[engine.topo.dp_rank]
    rank0 = dist.get_rank() == 0
    engine.forward(batch if rank0 else None)  # builds the data groups (one-off set-up traffic)
    install_counting_shim()
    received, result = {}, {}
    for name, call in [("forward", lambda: engine.forward(batch if rank0 else None)),
                       ("train_step", lambda: engine.train_step(batch if rank0 else None, loss_fn,
                                                                return_logprobs=True))]:
        dist.barrier()
        COUNT["bytes"] = 0
        out = call()
        received[name] = COUNT["bytes"]
        if rank0:
            lp = out["logprobs"] if name == "train_step" else torch.cat(out["logprobs"])
            result[f"{name}_logprobs"] = lp.tolist()
    result.update(received=received, share_bytes=batch_bytes(batch.select(mine)), batch_bytes=batch_bytes(batch))
    Path(args.out, f"rank{dist.get_rank()}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
