"""vLLM's receiving end of our weight sync: a weight-transfer engine registered as "areal" in vLLM's registry.

Runs inside each vLLM worker (imported there by the `vllm.general_plugins`
entry point `areal_mega = areal_mega.rollout.vllm_transfer:register` in
setup.py, which vLLM loads in its API, engine-core and worker processes);
the trainer never imports it. A server started with `--weight-transfer-config
'{"backend": "areal"}'` then speaks vLLM's RL API to the same broadcast group
the SGLang path uses:

- /init_weight_transfer_engine {"init_info": {master_address, master_port,
  rank_offset, world_size, group_name, backend}}: the worker joins the group
  `group_name` as rank rank_offset + its rank among the server's workers
  (SGLang's `rank_offset + tp_rank`), through `platform.process_group.join_group`,
  gloo on CPU or nccl on GPU;
- /start_weight_update: vLLM's layerwise reload is armed (parameters are
  re-materialised and re-processed as they arrive, as vLLM's own NCCL engine
  does; the CPU backend repacks weights after loading);
- /update_weights {"update_info": {names, dtype_names, shapes, load_format}}:
  one bucket: the worker receives each full HF-named tensor, in that order,
  by a broadcast from group rank 0 (load_format "flattened_bucket": one
  broadcast of the whole bucket packed, rollout/flat_bucket.py), and hands
  them to `model.load_weights` (which shards them for its TP rank);
- /finish_weight_update {"weight_version"}: processing is finalised, tied
  parameters are made one tensor again (`retie`) and the version set, before
  the trainer resumes generation.

vLLM's built-in "nccl" engine rendezvous through vLLM's own
StatelessProcessGroup and PyNccl communicator, which a trainer holding a
torch.distributed group cannot join; this engine uses the torch group both
backends share, so one trainer-side sender serves SGLang and vLLM.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from vllm.distributed.weight_transfer.base import (
    WeightTransferEngine,
    WeightTransferInitInfo,
    WeightTransferUpdateInfo,
)

from areal_mega.platform.process_group import DEFAULT_TIMEOUT_S, join_group, leave_group
from areal_mega.rollout import flat_bucket

ENGINE_NAME = "areal"


@dataclass
class ArealInitInfo(WeightTransferInitInfo):
    master_address: str
    master_port: int
    rank_offset: int
    world_size: int
    group_name: str = "weight_update_group"
    backend: str = "gloo"
    timeout_s: float = DEFAULT_TIMEOUT_S


@dataclass
class ArealUpdateInfo(WeightTransferUpdateInfo):
    """One bucket, in broadcast order: HF names, torch dtype names ("float32"), full shapes;
    load_format None (one broadcast per tensor) or "flattened_bucket" (one of the bucket packed)."""

    names: list[str]
    dtype_names: list[str]
    shapes: list[list[int]]
    load_format: str | None = None

    def __post_init__(self):
        if not len(self.names) == len(self.dtype_names) == len(self.shapes):
            raise ValueError(f"update_info: {len(self.names)} names, {len(self.dtype_names)} dtype_names, "
                             f"{len(self.shapes)} shapes (must be equal)")
        bad = [d for d in self.dtype_names if not isinstance(getattr(torch, d, None), torch.dtype)]
        if bad:
            raise ValueError(f"update_info.dtype_names: not torch dtypes: {bad}")
        if self.load_format not in (None, flat_bucket.LOAD_FORMAT):
            raise ValueError(f"update_info.load_format: {self.load_format!r} is not supported "
                             f"(none or {flat_bucket.LOAD_FORMAT!r})")


class ArealWeightTransferEngine(WeightTransferEngine[ArealInitInfo, ArealUpdateInfo]):
    init_info_cls = ArealInitInfo
    update_info_cls = ArealUpdateInfo
    supports_draft_weight_update = False

    def __init__(self, config, vllm_config, device: torch.device, model: torch.nn.Module) -> None:
        super().__init__(config, vllm_config, device, model)
        self.pg: dist.ProcessGroup | None = None
        self.ties: list[list[str]] = []

    def init_transfer_engine(self, init_info: ArealInitInfo) -> None:
        """Join the group; a group joined before (a trainer that left or is rebuilding it) is left first."""
        self.shutdown()
        pc = self.parallel_config
        rank = init_info.rank_offset + pc.data_parallel_index * pc.world_size + pc.rank
        self.pg = join_group(init_info.master_address, init_info.master_port, rank, init_info.world_size,
                             init_info.group_name, init_info.backend, init_info.timeout_s)

    def start_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        self.ties = tied_parameters(self.model)
        initialize_layerwise_reload(self.model)

    def finish_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        finalize_layerwise_reload(self.model, self.model_config)
        retie(self.model, self.ties)

    def update_weights(self, update_info: dict) -> None:
        self.receive_weights(self.parse_update_info(update_info))
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def receive_weights(self, update_info: ArealUpdateInfo) -> None:
        if self.pg is None:
            raise RuntimeError("weight-transfer group not joined: call /init_weight_transfer_engine first")
        weights = flat_bucket.receive(self.pg, [getattr(torch, d) for d in update_info.dtype_names],
                                      update_info.shapes, self.device,
                                      flattened=update_info.load_format == flat_bucket.LOAD_FORMAT)
        self.model.load_weights(list(zip(update_info.names, weights)))

    def shutdown(self) -> None:
        if self.pg is not None:
            leave_group(self.pg)
            self.pg = None


def tied_parameters(model: torch.nn.Module) -> list[list[str]]:
    """Names of parameters that are one tensor (Qwen 0.5B/1.5B: lm_head.weight is embed_tokens.weight), in
    registration order; groups of two or more."""
    groups: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def retie(model: torch.nn.Module, ties: list[list[str]]) -> None:
    """Make each tied group one tensor again, the first name's (the one load_weights fills), and redo the
    other owners' post-loading step.

    vLLM's layerwise reload rebuilds each layer's parameters; a layer whose weights are never sent (a tied
    lm_head: the trainer sends embed_tokens only, as HF checkpoints do) gets its old tensor back, and on CPU
    its processed copy (the GEMM kernel's packed weight) is made from that old tensor. Without this the
    output projection keeps the previous embeddings (measured: logprobs off by ~1 after a sync).
    """
    for first, *others in ties:
        tensor = model.get_parameter(first)
        for name in others:
            path, _, attr = name.rpartition(".")
            module = model.get_submodule(path)
            setattr(module, attr, tensor)
            method = getattr(module, "quant_method", None)
            if method is not None:
                method.process_weights_after_loading(module)


def register() -> None:
    """vLLM general-plugin hook: make "areal" a weight-transfer backend (idempotent; run in every vLLM process)."""
    from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory

    if ENGINE_NAME not in WeightTransferEngineFactory._registry:
        WeightTransferEngineFactory.register_engine(ENGINE_NAME, ArealWeightTransferEngine)
