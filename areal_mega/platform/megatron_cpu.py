"""CPU compatibility layer for megatron-core (0.16.x), active only without CUDA.

megatron-core hard-codes CUDA in a handful of places that the RL engine
touches. On a machine without CUDA, `install()` maps each of them to the CPU:

- `torch.cuda.current_device()` is used as a device -> returns `cpu`;
- `torch.cuda.synchronize()` -> no-op; `torch.cuda.manual_seed*` and
  `get/set_rng_state` -> the CPU generator, so the CUDA RNG tracker in
  `tensor_parallel.random` forks the CPU generator instead;
- tensor factories called with `device="cuda"` (default causal mask,
  pipeline token counters, clip_grads buffers) -> `device="cpu"`: only in
  the megatron-core modules that have such calls, whose `torch` global is
  replaced by a proxy (patching `torch.zeros` itself breaks transformers'
  buffer initialisation);
- `Tensor.cuda()` / `Module.cuda()` -> the object itself;
- the optimizer's and clip_grads' checks of `param.type() ==
  'torch.cuda.FloatTensor'` -> a CPU float tensor reports the CUDA type name.

Nothing here runs when `torch.cuda.is_available()` is true; `install()` is
idempotent and is called by `areal_mega.platform.init_distributed`.
"""
from __future__ import annotations

import functools
import importlib
import types

import torch

_INSTALLED = False
_FACTORIES = ("empty", "zeros", "ones", "full", "arange", "tensor", "rand", "randn", "randint", "empty_strided")
_MODULES_WITH_CUDA_FACTORIES = (
    "megatron.core.utils",
    "megatron.core.rerun_state_machine",
    "megatron.core.transformer.utils",
    "megatron.core.pipeline_parallel.schedules",
    "megatron.core.pipeline_parallel.utils",
    "megatron.core.distributed.param_and_grad_buffer",
    "megatron.core.optimizer.optimizer",
    "megatron.core.optimizer.grad_scaler",
    "megatron.core.optimizer.clip_grads",
    "megatron.core.tensor_parallel.data",
    "megatron.core.dist_checkpointing.exchange_utils",
    "megatron.core.dist_checkpointing.strategies.state_dict_saver",
)
_CUDA_TYPE_NAMES = {
    "torch.FloatTensor": "torch.cuda.FloatTensor",
    "torch.HalfTensor": "torch.cuda.HalfTensor",
    "torch.BFloat16Tensor": "torch.cuda.BFloat16Tensor",
}


def _to_cpu_device(device):
    if device is None:
        return None
    if isinstance(device, int):
        return torch.device("cpu")
    if isinstance(device, str) and device.startswith("cuda"):
        return torch.device("cpu")
    if isinstance(device, torch.device) and device.type == "cuda":
        return torch.device("cpu")
    return device


def _cpu_factory(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if "device" in kwargs:
            kwargs["device"] = _to_cpu_device(kwargs["device"])
        return fn(*args, **kwargs)

    return wrapper


class _CpuTorch(types.ModuleType):
    """`torch`, but its tensor factories map `device="cuda"` to the CPU."""

    def __init__(self):
        super().__init__("torch")
        for name in _FACTORIES:
            setattr(self, name, _cpu_factory(getattr(torch, name)))

    def __getattr__(self, name):
        return getattr(torch, name)


def _tensor_type(original):
    @functools.wraps(original)
    def type_(self, *args, **kwargs):
        if args or kwargs:
            return original(self, *args, **kwargs)
        name = original(self)
        return _CUDA_TYPE_NAMES.get(name, name)

    return type_


def install() -> bool:
    """Patch torch / megatron-core for CPU; returns True if the layer is active."""
    global _INSTALLED
    if torch.cuda.is_available():
        return False
    if _INSTALLED:
        return True
    cuda = torch.cuda
    cuda.current_device = lambda: torch.device("cpu")
    cuda.synchronize = lambda device=None: None
    cuda.manual_seed = lambda seed: torch.default_generator.manual_seed(int(seed))
    cuda.manual_seed_all = lambda seed: None  # torch.manual_seed calls it after seeding the CPU
    cuda.get_rng_state = lambda device="cuda": torch.get_rng_state()
    cuda.set_rng_state = lambda state, device="cuda": torch.set_rng_state(state)
    cpu_torch = _CpuTorch()
    for module_name in _MODULES_WITH_CUDA_FACTORIES:
        module = importlib.import_module(module_name)
        if getattr(module, "torch", None) is torch:
            module.torch = cpu_torch
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    torch.Tensor.type = _tensor_type(torch.Tensor.type)

    from megatron.core.tensor_parallel import random as mp_random

    mp_random._get_cuda_rng_state = lambda *args, **kwargs: torch.get_rng_state()
    mp_random._set_cuda_rng_state = lambda state, *args, **kwargs: torch.set_rng_state(state)
    _INSTALLED = True
    return True
