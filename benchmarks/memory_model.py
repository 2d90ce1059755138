"""Per-GPU memory of a training GPU for a run config: an estimate from the config, no GPU needed.

    python -m benchmarks.run memory      # every shipped recipe, in GB (bench_memory.py)

What a training rank holds (bytes; P = parameters of its TP x PP shard):
- weights in engine.dtype (bf16: 2 P), plus a frozen reference copy when the
  KL term is on (trainer.ref_model and algo.kl_coef > 0);
- gradients: megatron DDP's fp32 grad buffer (grad_reduce_in_fp32): 4 P;
- Adam: fp32 main params (bf16 only) + exp_avg + exp_avg_sq = 12 P (8 P in
  fp32), divided by DP with the distributed optimizer;
- activations of the micro-batches in flight (one, or up to PP with 1F1B on
  the first stage) of engine.max_tokens_per_micro_batch tokens, per layer per
  token (bf16, no dropout, fused/flash attention so no [s, s] scores, after
  Korthikanti et al. 2022, "Reducing Activation Recomputation"):
      2 * (4h + (q + 2 kv + h + 3 F) / TP)   bytes
  (two norm inputs, the QKV and MLP inputs replicated over TP; Q, K, V, the
  attention output, SwiGLU's gate and up and the down projection's input
  split over TP). With engine.sequence_parallel the replicated part is split
  too (each rank keeps its T/TP tokens of the norm inputs, and megatron's
  linears keep their local T/TP input and all-gather it again in the
  backward): 2 * (4h + q + 2 kv + h + 3 F) / TP, the layer input 2h / TP.
  Full recomputation keeps only each layer's input (2h) plus
  one layer's activations while it is recomputed; selective recomputation
  only drops the attention scores, which flash attention never stores, so it
  counts as none here;
- log-probs: the fused kernel keeps one fp32 [token_chunk, vocab_chunk] tile
  (Triton defaults 4096 x 16384); without it the [T, V/TP] fp32 logits and
  their gradient (2 x 4 T V / TP);
- a fixed 4 GiB for the CUDA context, NCCL buffers and allocator slack.
A config fits when the total is at most BUDGET_GIB of an 80 GB GPU.
"""
from __future__ import annotations

from dataclasses import dataclass

from areal_mega.models.hf_config import ModelDims

GIB = 2**30
BUDGET_GIB = 72.0  # of an 80 GB GPU (79.6 GiB usable): ~10% left for fragmentation
OVERHEAD_GIB = 4.0
FUSED_TILE = (4096, 16384)  # kernels/fused_linear.py Triton chunk defaults (tokens, vocabulary)


def _dims(layers, hidden, ffn, heads, kv_heads, vocab, tied) -> ModelDims:
    return ModelDims(arch="qwen2", num_layers=layers, hidden_size=hidden, ffn_hidden_size=ffn, num_heads=heads,
                     num_kv_heads=kv_heads, head_dim=hidden // heads, vocab_size=vocab,
                     max_position_embeddings=131072, rope_theta=1e6, norm_eps=1e-6, qkv_bias=True,
                     tie_word_embeddings=tied)


# config.json of the recipes' models (HF hub: deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B, Qwen/Qwen2.5-7B)
R1_DISTILL_QWEN_1_5B = _dims(28, 1536, 8960, 12, 2, 151936, tied=False)  # 1.78e9 parameters
QWEN2_5_7B = _dims(28, 3584, 18944, 28, 4, 152064, tied=False)  # 7.62e9 parameters


def num_params(d: ModelDims) -> int:
    kv = d.num_kv_heads * d.head_dim
    q = d.num_heads * d.head_dim
    attn = d.hidden_size * (q + 2 * kv) + (q + 2 * kv) * d.qkv_bias + q * d.hidden_size
    layer = attn + 3 * d.hidden_size * d.ffn_hidden_size + 2 * d.hidden_size
    embed = d.vocab_size * d.hidden_size * (1 if d.tie_word_embeddings else 2)
    return d.num_layers * layer + embed + d.hidden_size


def activation_bytes_per_token_layer(d: ModelDims, tp: int, sequence_parallel: bool = False) -> float:
    """bf16 activations one layer keeps for its backward, per token (see the module docstring)."""
    h, kv, q = d.hidden_size, d.num_kv_heads * d.head_dim, d.num_heads * d.head_dim
    replicated = 4 * h / tp if sequence_parallel else 4 * h
    return 2 * (replicated + (q + 2 * kv + h + 3 * d.ffn_hidden_size) / tp)


@dataclass
class MemoryEstimate:
    """Bytes per training GPU, by part."""

    weights: float
    reference: float
    grads: float
    optimizer: float
    activations: float
    logprobs: float
    overhead: float

    @property
    def total(self) -> float:
        return sum(vars(self).values())

    def gib(self) -> dict[str, float]:
        return {**{k: v / GIB for k, v in vars(self).items()}, "total": self.total / GIB}


def estimate(cfg, dims: ModelDims, fused_logprobs: bool = True) -> MemoryEstimate:
    """The per-GPU memory of run config `cfg` (a RunConfig) for a model of `dims` on its training GPUs.

    DP = the trainer's GPUs in cfg.cluster's plan / (TP * PP).
    """
    from areal_mega.cluster import plan_placement

    e, par = cfg.engine, cfg.engine.parallel
    plan = plan_placement(cfg.cluster, cfg.rollout.tp_size, par.tp, par.pp)
    dp = plan.world_size // (par.tp * par.pp)
    shard = num_params(dims) / (par.tp * par.pp)
    bf16 = e.dtype in ("bf16", "auto")  # auto is bf16 on GPU
    weight_bytes = 2 if bf16 else 4
    opt_bytes = (12 if bf16 else 8) / (dp if e.optimizer.distributed_optimizer else 1)
    use_ref = cfg.trainer.mode == "rl" and cfg.trainer.ref_model and cfg.algo.kl_coef > 0
    tokens = e.max_tokens_per_micro_batch
    layers = dims.num_layers // par.pp
    in_flight = par.pp  # 1F1B: the first stage holds up to PP micro-batches' activations
    per_layer = activation_bytes_per_token_layer(dims, par.tp, e.sequence_parallel)
    layer_input = 2 * dims.hidden_size / (par.tp if e.sequence_parallel else 1)
    if e.recompute.granularity == "full":
        n = e.recompute.num_layers
        if e.recompute.method == "uniform":  # one input per group of n layers; a group is recomputed at a time
            inputs, full, working = layers / n, 0, n
        else:  # block: the first n layers keep only their input, the rest keep everything
            inputs, full, working = min(n, layers), max(layers - n, 0), 1
        acts = tokens * (in_flight * (inputs * layer_input + full * per_layer) + working * per_layer)
    else:
        acts = tokens * in_flight * layers * per_layer
    vocab_local = dims.vocab_size / par.tp
    logprobs = 4 * FUSED_TILE[0] * FUSED_TILE[1] if fused_logprobs else 2 * 4 * tokens * vocab_local
    return MemoryEstimate(
        weights=weight_bytes * shard,
        reference=weight_bytes * shard if use_ref else 0.0,
        grads=4 * shard,
        optimizer=opt_bytes * shard,
        activations=acts,
        logprobs=logprobs,
        overhead=OVERHEAD_GIB * GIB,
    )


def fits(est: MemoryEstimate, budget_gib: float = BUDGET_GIB) -> bool:
    return est.total <= budget_gib * GIB
