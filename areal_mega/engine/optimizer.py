"""Megatron DDP + (Distributed)Optimizer + LR schedule for one model chunk."""
from __future__ import annotations

import math

import torch

from areal_mega.engine.config import OptimizerConfig


def wrap_ddp(model, transformer_config, distributed_optimizer: bool):
    """Megatron DDP with a contiguous fp32 grad buffer; grads are summed over DP.

    The caller's loss is already normalised by the global number of loss
    tokens (`calculate_per_token_loss`), so DP reduction is a sum.
    """
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig

    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=False,
        use_distributed_optimizer=distributed_optimizer,
    )
    return DistributedDataParallel(config=transformer_config, ddp_config=ddp_config, module=model)


def build_optimizer(model, cfg: OptimizerConfig, params_dtype: torch.dtype):
    """Adam over `model` (a DDP-wrapped chunk) and a warm-up + constant/cosine scheduler."""
    from megatron.core.optimizer import OptimizerConfig as MegatronOptimizerConfig
    from megatron.core.optimizer import get_megatron_optimizer
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    opt_config = MegatronOptimizerConfig(
        optimizer="adam",
        lr=cfg.lr,
        min_lr=cfg.min_lr,
        weight_decay=cfg.weight_decay,
        adam_beta1=cfg.beta1,
        adam_beta2=cfg.beta2,
        adam_eps=cfg.eps,
        clip_grad=cfg.clip_grad,
        bf16=params_dtype == torch.bfloat16,
        fp16=params_dtype == torch.float16,
        params_dtype=params_dtype,
        use_distributed_optimizer=cfg.distributed_optimizer,
    )
    optimizer = get_megatron_optimizer(opt_config, [model])
    warmup = int(math.ceil(cfg.warmup_fraction * cfg.total_steps))
    scheduler = OptimizerParamScheduler(
        optimizer,
        init_lr=0.0 if warmup else cfg.lr,
        max_lr=cfg.lr,
        min_lr=cfg.min_lr if cfg.lr_schedule == "cosine" else cfg.lr,
        lr_warmup_steps=warmup,
        lr_decay_steps=max(cfg.total_steps, warmup + 1),
        lr_decay_style=cfg.lr_schedule,
        start_wd=cfg.weight_decay,
        end_wd=cfg.weight_decay,
        wd_incr_steps=max(cfg.total_steps, 1),
        wd_incr_style="constant",
    )
    return optimizer, scheduler
