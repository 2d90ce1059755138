"""torchrun worker: the same forward and train step with engine.sequence_parallel off and on (fp32).

Builds, one after the other in one process, engines over the same HF weights for each variant:
"off" (TP without SP), "on" (SP), and with --more-variants also "on_full_recompute" (SP with
engine.recompute full, uniform, every layer) and "on_no_attr" (SP, but the norm weights'
`sequence_parallel` attribute removed, so megatron does not all-reduce their grads over TP: what the
test must catch). Each runs `engine.forward` and one `train_step` on `worker_engine.make_batch`.
Writes rank{r}.json: per variant, logprobs (rank 0: flat list), loss, grad_norm, norm_grads and
norm_weights (megatron name -> this rank's main_grad / weight after the step, for every norm),
norm_attr (True when every norm weight carries sequence_parallel=True) and hf_weights (the sync
rank's `engine.hf_weights()` after the step: what weight sync and HF export send); padded_rows:
how many of the batch's rows `pack` padded for TP; gathered_rows: [tokens in, tokens out] of every
`forward.gather_sequence` call on this rank (none without SP); checkpoint_calls: how often megatron's
tensor_parallel.checkpoint ran (0 means nothing was recomputed); saved_bytes_per_token_layer: what the
decoder layers keep for the backward in the train step, per row token and layer (`SavedActivations`).
"""
import argparse
import json
from pathlib import Path

import torch
import torch.distributed as dist


from areal_mega.engine import forward
from areal_mega.engine.config import EngineConfig, OptimizerConfig, ParallelConfig, RecomputeConfig
from areal_mega.engine.engine import Engine
from areal_mega.engine.packing import pack
from areal_mega.platform import init_distributed
from tests.engine.worker_engine import counting_recompute, loss_fn, make_batch


def _norms(engine: Engine) -> dict[str, torch.nn.Parameter]:
    """Every norm weight: local spec `*layernorm.weight`; TE spec also `linear_qkv/fc1.layer_norm_weight`."""
    return {n: p for n, p in engine.gpt.named_parameters() if "layernorm" in n or "layer_norm" in n}


class SavedActivations:
    """Bytes the decoder layers save for the backward during a train step, per row token and layer.

    A saved-tensors hook counts each storage once per micro-batch while a layer's forward runs (what one
    forward saves lives until its backward), leaving out the parameters; a micro-batch's tokens are its
    row's (T/TP local rows times TP under sequence parallelism).
    """

    def __init__(self, engine: Engine, rows_split_by: int):
        self.layers = engine.gpt.decoder.layers
        self.params = {p.untyped_storage().data_ptr() for p in engine.gpt.parameters()}
        self.split, self.rows, self.inside = rows_split_by, [], False
        self.handles = [self.layers[0].register_forward_pre_hook(self._new_row, with_kwargs=True)]
        for layer in self.layers:
            self.handles.append(layer.register_forward_pre_hook(lambda *a: setattr(self, "inside", True)))
            self.handles.append(layer.register_forward_hook(lambda *a: setattr(self, "inside", False)))

    def _new_row(self, module, args, kwargs):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        self.rows.append({"tokens": hidden.shape[0] * self.split, "storages": {}})

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        if self.inside:
            storage = t.untyped_storage()
            if storage.data_ptr() not in self.params:
                self.rows[-1]["storages"][storage.data_ptr()] = storage.nbytes()
        return t

    def per_token_layer(self) -> float:
        for h in self.handles:
            h.remove()
        total = sum(sum(r["storages"].values()) for r in self.rows)
        return total / sum(r["tokens"] for r in self.rows) / len(self.layers)


def run_variant(args, sequence_parallel: bool, drop_attr: bool, recompute: str) -> dict:
    cfg = EngineConfig(
        model_path=args.model,
        parallel=ParallelConfig(tp=args.tp, pp=args.pp),
        sequence_parallel=sequence_parallel,
        recompute=RecomputeConfig(granularity=recompute),
        optimizer=OptimizerConfig(lr=1e-3, eps=1e-3, weight_decay=0.0, clip_grad=1e9, distributed_optimizer=True),
        max_tokens_per_micro_batch=64,
        dtype=args.dtype,
    )
    gathered = []
    gather = forward.gather_sequence

    def recorded(hidden, tp_group):
        full = gather(hidden, tp_group)
        gathered.append([hidden.shape[1], full.shape[1]])
        return full

    forward.gather_sequence = recorded
    with counting_recompute() as calls:
        engine = Engine(cfg)
        if drop_attr:
            for p in _norms(engine).values():
                p.sequence_parallel = False
        batch = make_batch(engine.dims.vocab_size)
        root = dist.get_rank() == 0
        out = engine.forward(batch if root else None)
        saved = SavedActivations(engine, args.tp if sequence_parallel else 1)
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
            stats = engine.train_step(batch if root else None, loss_fn)
    forward.gather_sequence = gather
    norms = _norms(engine)
    weights = {name: t.flatten().tolist() for name, t in engine.hf_weights()}
    return {
        "logprobs": torch.cat(out["logprobs"]).tolist() if root else None,
        "loss": stats["loss"],
        "grad_norm": stats["grad_norm"],
        "norm_grads": {n: p.main_grad.flatten().tolist() for n, p in norms.items()},
        "norm_weights": {n: p.detach().flatten().tolist() for n, p in norms.items()},
        "norm_attr": all(getattr(p, "sequence_parallel", False) for p in norms.values()),
        "num_norms": len(norms),
        "hf_weights": weights if engine.topo.is_sync_rank else {},
        "gathered_rows": gathered,
        "checkpoint_calls": calls[0],
        "saved_bytes_per_token_layer": saved.per_token_layer(),
        "padded_rows": sum(mb.num_pad > 0 for mb in pack(batch, 64, pad_to_multiple=args.tp)),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tp", type=int, default=2)
    ap.add_argument("--pp", type=int, default=1)
    ap.add_argument("--more-variants", action="store_true")
    ap.add_argument("--dtype", default="fp32", help="engine.dtype")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    init_distributed()
    variants = {"off": (False, False, "none"), "on": (True, False, "none")}
    if args.more_variants:
        variants.update(on_full_recompute=(True, False, "full"), on_no_attr=(True, True, "none"))
    result = {name: run_variant(args, *how) for name, how in variants.items()}
    Path(args.out, f"rank{dist.get_rank()}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
