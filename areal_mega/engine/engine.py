"""The training engine: one model (policy or frozen reference) on megatron-core.

Every rank of the job constructs the same `Engine` and calls its methods
together. Global rank 0 is the controller: it passes the batch; the engine
sends each DP rank only its token-balanced share as flat tensors
(engine/transport.py), packs the share into micro-batches and runs
megatron-core's pipeline schedule. Per-token results come back to rank 0
only, in the batch's order; small stats reach every rank.

Loss functions take flat per-response-token tensors of one micro-batch:
`loss_fn(logprobs [N], entropy [N], fields {name: [N]}, mb, global_num_tokens, global_num_seqs)`
and return `(loss, stats)`, the loss already normalised over the whole global
batch (sum over micro-batches and DP ranks is the batch loss); stats are
micro-batch means of floats, averaged by the engine with token weights.
"""
from __future__ import annotations

import datetime
import functools
import math
from typing import Callable, Iterator

import torch
import torch.distributed as dist

from areal_mega.engine.config import EngineConfig
from areal_mega.engine.forward import model_inputs, output_hidden_states, response_logprobs
from areal_mega.engine.optimizer import build_optimizer, wrap_ddp
from areal_mega.engine.packing import MicroBatch, SeqBatch, pack, partition_balanced
from areal_mega.engine.parallel import Topology, init_topology
from areal_mega.engine.transport import DataGroups, ShareMeta, gather_to_controller, scatter_shares
from areal_mega.models.hf_config import build_gpt_model, read_hf_dims, transformer_config
from areal_mega.models.hf_io import iter_hf_weights, load_hf_weights
from areal_mega.platform import device as platform_device

LossFn = Callable[..., tuple[torch.Tensor, dict]]


@functools.lru_cache(maxsize=None)
def _object_group():
    """A gloo group over the whole job for Python objects, flags and batch transport.

    Ranks other than 0 wait in it through a whole rollout, so `Engine` sets its
    time-out to engine.collective_timeout_s (hours); a rank that dies makes the
    others' pending call fail at once (gloo: "Connection closed by peer").
    """
    return dist.new_group(backend="gloo")


def _set_object_group_timeout(timeout_s: float) -> None:
    import datetime

    from torch.distributed.distributed_c10d import _set_pg_timeout

    _set_pg_timeout(datetime.timedelta(seconds=timeout_s), _object_group())


def _dtype(name: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16}[name]


class Engine:
    """A GPT model of one pipeline stage, its optimizer (if trainable) and the schedule."""

    def __init__(self, cfg: EngineConfig, trainable: bool = True):
        self.cfg = cfg
        self.topo: Topology = init_topology(cfg.parallel, cfg.seed)
        _set_object_group_timeout(cfg.collective_timeout_s)
        self.dims = read_hf_dims(cfg.model_path)
        self.dtype = _dtype(cfg.dtype)
        self.device = platform_device()
        self.tconfig = transformer_config(self.dims, cfg.parallel.tp, cfg.parallel.pp, self.dtype,
                                          cfg.recompute.granularity, cfg.recompute.method, cfg.recompute.num_layers,
                                          cfg.sequence_parallel)
        self.layer_offset = self.topo.pp_rank * (self.dims.num_layers // self.topo.pp_size)
        model = build_gpt_model(self.dims, self.tconfig, self.topo.is_first_stage, self.topo.is_last_stage, self.topo.tp_size)
        model = model.to(device=self.device, dtype=self.dtype)
        load_hf_weights(model, cfg.model_path, self.dims, self.topo.tp_rank, self.topo.tp_size, self.layer_offset)
        if self.topo.is_last_stage:
            output_hidden_states(model)
        self.gpt = model
        self.trainable = trainable
        self.optimizer = self.scheduler = None
        if trainable:
            self.model = wrap_ddp(model, self.tconfig, cfg.optimizer.distributed_optimizer)
            self.optimizer, self.scheduler = build_optimizer(self.model, cfg.optimizer, self.dtype)
            self.tconfig.finalize_model_grads_func = self._finalize_grads
        else:
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            self.model = model
        self.steps = 0
        self._groups: DataGroups | None = None

    # ----------------------------------------------------------------- batches
    def _share(self, batch: SeqBatch | None) -> tuple[SeqBatch, list[list[int]] | None, ShareMeta]:
        """This DP rank's token-balanced share of the controller's batch, sent as flat tensors
        (engine/transport.py); returns (share, indices per DP replica on rank 0 else None, sizes)."""
        parts = None
        if dist.get_rank() == 0:
            parts = partition_balanced([len(ids) for ids in batch.input_ids], self.topo.dp_size)
        share, meta = scatter_shares(batch, parts, self._data_groups())
        return share, parts, meta

    def _pack(self, share: SeqBatch) -> list[MicroBatch]:
        """Rows of this rank's share; with sequence parallelism each row is padded to a multiple of TP."""
        multiple = self.topo.tp_size if self.cfg.sequence_parallel else 1
        return pack(share, self.cfg.max_tokens_per_micro_batch, pad_to_multiple=multiple)

    def _data_groups(self) -> DataGroups:
        if self._groups is None:
            producer = self.topo.is_last_stage and self.topo.tp_rank == 0
            timeout = datetime.timedelta(seconds=self.cfg.collective_timeout_s)  # as long as the object group's
            self._groups = DataGroups(_object_group(), self.topo.dp_rank, self.topo.dp_size, producer, timeout)
        return self._groups

    def _results(self, store: list, batch: SeqBatch | None, share: SeqBatch, parts, meta: ShareMeta,
                 keys: tuple[str, ...]) -> torch.Tensor | None:
        """Per-token `keys` of the micro-batches in `store` (last stage), gathered to rank 0 as
        `[len(keys), N]` float32 in the order of the controller's `batch` (None elsewhere)."""
        local = None
        if self.topo.is_last_stage and self.topo.tp_rank == 0:
            lens = [share.response_len(i) for i in range(len(share))]
            starts = torch.zeros(len(lens) + 1, dtype=torch.int64)
            starts[1:] = torch.cumsum(torch.tensor(lens, dtype=torch.int64), 0)
            local = torch.empty(len(keys), int(starts[-1]), dtype=torch.float32)
            for item in store:
                mb, offset = item["mb"], 0
                for j, n in zip(mb.seq_index, mb.response_lens.tolist()):
                    for k, key in enumerate(keys):
                        local[k, starts[j] : starts[j] + n] = item[key][offset : offset + n]
                    offset += n
        response_lens = [batch.response_len(i) for i in range(len(batch))] if dist.get_rank() == 0 else None
        return gather_to_controller(local, len(keys), parts, meta, response_lens, self._data_groups())

    def _run_schedule(self, micro_batches: list[MicroBatch], loss_fn, forward_only: bool, temperature: float):
        from megatron.core.pipeline_parallel import get_forward_backward_func

        def forward_step(data_iterator, model):
            mb = next(data_iterator)
            hidden = model(**model_inputs(mb, self.device))
            return hidden, functools.partial(self._last_stage_loss, mb, loss_fn, temperature)

        return get_forward_backward_func()(
            forward_step_func=forward_step,
            data_iterator=iter(micro_batches),
            model=[self.model],
            num_microbatches=len(micro_batches),
            seq_length=max(mb.num_tokens for mb in micro_batches),
            micro_batch_size=1,
            forward_only=forward_only,
        )

    def _last_stage_loss(self, mb: MicroBatch, loss_fn, temperature: float, hidden: torch.Tensor):
        if self.dims.tie_word_embeddings:
            weight = self.gpt.shared_embedding_or_output_weight()
        else:
            weight = self.gpt.output_layer.weight
        logprobs, entropy = response_logprobs(
            hidden, weight, mb, self.topo.tp_group, temperature, self.cfg.logprob_backend, self.dims.vocab_size,
            self.cfg.sequence_parallel,
        )
        num_tokens = torch.tensor(len(mb.targets), dtype=torch.int)
        if loss_fn is None:
            zero = logprobs.sum() * 0.0
            return zero, num_tokens, {"mb": mb, "logprobs": logprobs.detach().float().cpu(), "entropy": entropy.detach().float().cpu()}
        fields = {k: v.to(self.device) for k, v in mb.token_fields.items()}
        loss, stats = loss_fn(logprobs, entropy, fields, mb)
        stats = {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in stats.items()}
        return loss, num_tokens, {"loss": loss.detach().float().item(), "n": len(mb.targets), "stats": stats,
                                  "mb": mb, "logprobs": logprobs.detach().float().cpu()}

    def _finalize_grads(self, model_chunks, num_tokens=None, **kwargs):
        from megatron.core.distributed import finalize_model_grads

        finalize_model_grads(model_chunks, num_tokens=None)

    @property
    def object_group(self):
        """The gloo group over the whole job the engine uses for Python objects and flags."""
        return _object_group()

    def _gather(self, local: list) -> list:
        """All-gather Python objects from every rank (results of last stages)."""
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, local, group=_object_group())
        return out

    # ----------------------------------------------------------------- public
    @torch.no_grad()
    def forward(self, batch: SeqBatch | None, temperature: float = 1.0) -> dict[str, list[torch.Tensor]] | None:
        """Logprobs and entropy of every response token, on rank 0 only (None elsewhere):
        {"logprobs": [R_i], "entropy": [R_i]} per sequence, views into one flat `[N]` tensor each.

        Logits are divided by `temperature` (the rollout temperature) first.
        """
        share, parts, meta = self._share(batch)
        was_training = self.model.training
        self.model.eval()
        store = []
        if len(share):  # a DP replica with no sequences (batch smaller than DP) has nothing to run
            store = self._run_schedule(self._pack(share), None, True, temperature)
        self.model.train(was_training)
        out = self._results(store, batch, share, parts, meta, ("logprobs", "entropy"))
        if out is None:
            return None
        lens = [batch.response_len(i) for i in range(len(batch))]
        return {"logprobs": list(out[0].split(lens)), "entropy": list(out[1].split(lens))}

    def train_step(self, batch: SeqBatch | None, loss_fn: LossFn, temperature: float = 1.0,
                   return_logprobs: bool = False, grad_gate=None) -> dict:
        """One optimizer step over the whole batch: forward + backward of every micro-batch, then Adam.

        `loss_fn(logprobs, entropy, fields, mb)` is wrapped so that it also
        receives the global token and sequence counts as keyword arguments
        `global_num_tokens` and `global_num_seqs`. A non-finite loss or
        gradient on any rank skips the update on all ranks
        (`stats["skipped"] = 1`). With `return_logprobs`, rank 0's stats also
        hold "logprobs": the `[N]` float32 log-probs this step's forward computed
        (before the update), in the batch's token order. `grad_gate(micro_stats)`, if given, is called on
        every rank after the backward with this rank's list of `loss_fn` stats dicts (empty off the last
        stage; it may pop private keys from them); True zeroes the gradients before the step, which is
        then the update of a zeroed loss (the minibatch-wide importance-ratio cap, algo/loss.py).
        """
        if not self.trainable:
            raise RuntimeError("train_step on an engine built with trainable=False")
        share, parts, meta = self._share(batch)
        num_tokens, num_seqs = meta.num_response_tokens, meta.num_seqs
        if num_seqs < self.topo.dp_size:
            raise ValueError(f"a training batch of {num_seqs} sequences cannot be split over "
                             f"{self.topo.dp_size} data-parallel ranks")
        wrapped = functools.partial(loss_fn, global_num_tokens=float(num_tokens), global_num_seqs=float(num_seqs))
        self.model.train()
        self.model.zero_grad_buffer()
        self.optimizer.zero_grad()
        store = self._run_schedule(self._pack(share), wrapped, False, temperature)
        if grad_gate is not None and grad_gate([s["stats"] for s in store]):
            self.model.zero_grad_buffer()
        finite = all(math.isfinite(s["loss"]) for s in store)
        # one reduction per buffer: a NaN or inf anywhere makes the sum non-finite (so would finite grads
        # summing past float32's range, where the grad norm overflows too); isfinite(...).all() took four passes
        finite = finite and all(bool(torch.isfinite(b.grad_data.sum())) for b in self.model.buffers)
        flag = torch.tensor([0.0 if finite else 1.0])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=_object_group())
        if flag.item() > 0:
            grad_norm, skipped = float("nan"), 1.0
            self.model.zero_grad_buffer()
            self.optimizer.zero_grad()
        else:
            _, grad_norm, _ = self.optimizer.step()
            self.scheduler.step(increment=1)
            skipped = 0.0
            self.steps += 1
        local = [(s["loss"], s["n"], s["stats"]) for s in store] if self.topo.tp_rank == 0 else []
        rows = [r for part in self._gather(local) for r in part]  # small: a few floats per micro-batch
        total_n = sum(n for _, n, _ in rows) or 1
        stats = {"loss": sum(loss for loss, _, _ in rows)}
        for key in rows[0][2] if rows else []:
            stats[key] = sum(s[key] * n for _, n, s in rows) / total_n
        stats.update(grad_norm=float(grad_norm), lr=self.optimizer.param_groups[0]["lr"], skipped=skipped)
        if return_logprobs:
            out = self._results(store, batch, share, parts, meta, ("logprobs",))
            if out is not None:
                stats["logprobs"] = out[0]
        return stats

    def hf_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """This stage's weights as full HF tensors, one at a time (the TP ranks of the stage iterate
        together; weight sync streams them from each stage's sender, weight_sync/stages.py)."""
        return iter_hf_weights(self.gpt, self.dims, self.topo.tp_group, self.layer_offset)
