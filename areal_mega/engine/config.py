"""Configs the engine owns: model path, parallel layout, optimizer, micro-batching."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class ParallelConfig:
    """TP x PP x DP; DP is world_size / (TP * PP) and is checked against the world size."""

    tp: int = 1
    pp: int = 1

    def __post_init__(self):
        for name in ("tp", "pp"):
            if getattr(self, name) < 1:
                raise ValueError(f"parallel.{name} must be >= 1, got {getattr(self, name)}")

    def dp(self, world_size: int) -> int:
        if world_size % (self.tp * self.pp):
            raise ValueError(
                f"parallel.tp * parallel.pp = {self.tp * self.pp} does not divide the world size {world_size}"
            )
        return world_size // (self.tp * self.pp)


@dataclasses.dataclass
class OptimizerConfig:
    """Adam(W) with warm-up then constant or cosine LR, grad-norm clipping."""

    lr: float = 1e-6
    min_lr: float = 0.0
    lr_schedule: str = "constant"  # constant | cosine
    warmup_fraction: float = 0.0  # of total_steps
    total_steps: int = 1000
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-5
    weight_decay: float = 0.05
    clip_grad: float = 1.0
    distributed_optimizer: bool = True

    def __post_init__(self):
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"optimizer.lr_schedule must be constant or cosine, got '{self.lr_schedule}'")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"optimizer.warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.lr <= 0 or self.total_steps < 1:
            raise ValueError("optimizer.lr must be > 0 and optimizer.total_steps >= 1")


@dataclasses.dataclass
class RecomputeConfig:
    """Activation recomputation (megatron's recompute_granularity / method / num_layers).

    granularity: "none"; "selective" recomputes each layer's core attention in
      the backward (its softmax-sized activations are never kept); "full"
      keeps only each checkpointed layer's input and recomputes the layer.
    method / num_layers (full only): "uniform" checkpoints groups of
      num_layers layers (1 = every layer on its own); "block" checkpoints the
      first num_layers layers of each pipeline stage and keeps the rest.
    """

    granularity: str = "none"  # none | selective | full
    method: str = "uniform"  # uniform | block
    num_layers: int = 1

    def __post_init__(self):
        if self.granularity not in ("none", "selective", "full"):
            raise ValueError(f"engine.recompute.granularity must be none, selective or full, got '{self.granularity}'")
        if self.method not in ("uniform", "block"):
            raise ValueError(f"engine.recompute.method must be uniform or block, got '{self.method}'")
        if self.num_layers < 1:
            raise ValueError(f"engine.recompute.num_layers must be >= 1, got {self.num_layers}")


@dataclasses.dataclass
class EngineConfig:
    """One policy (or reference) model on megatron-core."""

    model_path: str = ""  # HF directory (config.json + safetensors + tokenizer)
    parallel: ParallelConfig = dataclasses.field(default_factory=ParallelConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    recompute: RecomputeConfig = dataclasses.field(default_factory=RecomputeConfig)
    # megatron's sequence parallelism (needs parallel.tp > 1, refused at tp 1): norms and residuals hold
    # T/TP tokens per rank, so their activations shrink by TP; rows are padded to a multiple of TP
    sequence_parallel: bool = False
    max_tokens_per_micro_batch: int = 8192  # packing budget per micro-batch row (+ < TP padding tokens with SP)
    dtype: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16
    logprob_backend: str = "auto"  # kernels backend: auto | torch | triton
    seed: int = 1
    # how long a rank waits in the engine's gloo group for the controller (through a whole rollout and
    # the servers' start on resume); a dead rank fails the wait at once, a hung one after this
    collective_timeout_s: float = 4 * 3600.0

    def __post_init__(self):
        if self.collective_timeout_s <= 0:
            raise ValueError(f"engine.collective_timeout_s must be > 0, got {self.collective_timeout_s}")
        if self.dtype not in ("auto", "fp32", "bf16"):
            raise ValueError(f"engine.dtype must be auto, fp32 or bf16, got '{self.dtype}'")
        if self.logprob_backend not in ("auto", "torch", "triton"):
            raise ValueError(f"engine.logprob_backend must be auto, torch or triton, got '{self.logprob_backend}'")
        if self.max_tokens_per_micro_batch < 1:
            raise ValueError("engine.max_tokens_per_micro_batch must be >= 1")
        if self.sequence_parallel and self.parallel.tp == 1:
            raise ValueError("engine.sequence_parallel: true needs engine.parallel.tp > 1 "
                             "(it splits each row's tokens over the TP ranks)")
