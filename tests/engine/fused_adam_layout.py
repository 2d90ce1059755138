"""A CPU stand-in for TE's / apex's FusedAdam: AdamW math, `step` kept in `param_groups`.

TE's `transformer_engine.pytorch.optimizers.FusedAdam` and apex's FusedAdam count
steps in `group["step"]` and keep only `exp_avg` / `exp_avg_sq` per parameter
(no per-parameter `step`, unlike torch's Adam). `use_fused_adam_layout()` makes
megatron-core 0.16.1 build this class where it would build FusedAdam and sets the
flags it reads when TE is installed, so a CPU run exercises the GPU layout.
"""
from __future__ import annotations

import torch


class GroupStepAdam(torch.optim.Optimizer):
    """AdamW (decoupled weight decay when adam_w_mode) with the step count per param group."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, adam_w_mode=True):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, adam_w_mode=adam_w_mode))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            if not group["params"]:
                continue  # like FusedAdam: an empty group's step is never bumped
            group["step"] = group.get("step", 0) + 1
            beta1, beta2 = group["betas"]
            bc1, bc2 = 1 - beta1 ** group["step"], 1 - beta2 ** group["step"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                grad = p.grad
                if group["adam_w_mode"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                else:
                    grad = grad.add(p, alpha=group["weight_decay"])
                state["exp_avg"].mul_(beta1).add_(grad, alpha=1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = (state["exp_avg_sq"] / bc2).sqrt_().add_(group["eps"])
                p.addcdiv_(state["exp_avg"], denom, value=-group["lr"] / bc1)


def use_fused_adam_layout() -> None:
    """Make megatron-core build GroupStepAdam and treat it as TE's FusedAdam (call before Engine)."""
    import megatron.core.optimizer as mopt
    import megatron.core.optimizer.distrib_optimizer as dopt

    mopt.Adam = dopt.Adam = GroupStepAdam
    mopt.USING_PYTORCH_OPTIMIZER = False
    dopt.HAVE_APEX_OR_TE = True
    dopt.USING_TE_OPTIMIZER = True
