"""Log-prob kernels versus naive torch: time and peak memory.

CPU (always): float32, V = 151,936 (Qwen), H = 1,536, T in {1024, 2048}
(quick: T = 256, H = 256), forward + backward of logprobs and entropy with
random output grads, one repeat (a 2-core machine needs ~1 min per LM-head run):
  lm_head      naive `hidden @ W.T` -> log_softmax -> gather / entropy
               vs fused_linear_logprobs (backend "torch", the CPU default)
  logits       naive log_softmax -> gather / entropy on given [T, V] logits
               vs vocab_parallel_logprobs (backend "torch")
Peak memory on CPU is the process's peak resident set (VmHWM, reset through
/proc/self/clear_refs after the inputs exist) minus the resident set at that
moment, measured in a fresh subprocess per case so no allocator cache is
reused; it therefore counts outputs and gradients too. `*_work_mb` subtracts
the gradient outputs both paths must return (grad of logits, or of hidden and
weight), which is the memory the algorithm itself needs.

GPU (instead of the CPU cases when CUDA is present): bf16, the Triton
backend against naive torch, and for the LM head Liger-Kernel's fused linear
cross entropy (when importable; it returns no entropy, so it does less work):
  lm_head  T in {4K, 16K, 32K};  logits  T in {4K, 16K};  ppo_loss  4M tokens.
Timed with CUDA events (3 repeats after a warm-up that compiles), peak from
torch.cuda.max_memory_allocated above the inputs (outputs and grads
included), and each path's max |logprob - float32 reference| on the same
bf16 inputs. benchmarks/gpu_check.sh runs this on a lent GPU.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import torch

from benchmarks.memory import status_kb

V, H = 151936, 1536


def _naive_lm_head(hidden, weight, targets, temperature=1.0):
    logp = torch.log_softmax((hidden @ weight.t()).float() / temperature, dim=-1)
    return logp.gather(1, targets[:, None])[:, 0], -(logp.exp() * logp).sum(-1)


def _naive_logits(logits, targets):
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(1, targets[:, None])[:, 0], -(logp.exp() * logp).sum(-1)


def _case_inputs(case: str, t: int, h: int, dtype, device):
    g = torch.Generator(device=device).manual_seed(0)
    targets = torch.randint(0, V, (t,), device=device, generator=g)
    g_lp, g_ent = torch.randn(t, device=device, generator=g), torch.randn(t, device=device, generator=g)
    if case == "lm_head":
        hidden = torch.randn(t, h, device=device, generator=g, dtype=dtype).requires_grad_(True)
        weight = (0.02 * torch.randn(V, h, device=device, generator=g, dtype=dtype)).requires_grad_(True)
        return (hidden, weight), targets, g_lp, g_ent
    logits = (3.0 * torch.randn(t, V, device=device, generator=g, dtype=dtype)).requires_grad_(True)
    return (logits,), targets, g_lp, g_ent


def _path_fn(case: str, path: str, backend: str):
    from areal_mega.kernels import fused_linear_logprobs, vocab_parallel_logprobs

    if path == "naive":
        return _naive_lm_head if case == "lm_head" else _naive_logits
    if path == "liger":
        from liger_kernel.transformers.functional import (
            liger_fused_linear_cross_entropy,
        )

        def liger(hidden, weight, targets):  # -logprob per token; no entropy output
            return -liger_fused_linear_cross_entropy(hidden, weight, targets, reduction="none"), None
        return liger
    if case == "lm_head":
        return lambda h, w, t: fused_linear_logprobs(h, w, t, backend=backend)
    return lambda x, t: vocab_parallel_logprobs(x, t, backend=backend)


def _fwd_bwd(fn, inputs, targets, g_lp, g_ent):
    lp, ent = fn(*inputs, targets)
    outs, grads = ([lp], [g_lp]) if ent is None else ([lp, ent], [g_lp, g_ent])
    return lp, torch.autograd.grad(outs, inputs, grads)


def measure_cpu(case: str, path: str, t: int, h: int) -> dict:
    """Run in a fresh process: seconds, peak MB above the inputs, MB of gradient outputs."""
    torch.manual_seed(0)
    inputs, targets, g_lp, g_ent = _case_inputs(case, t, h, torch.float32, "cpu")
    fn = _path_fn(case, path, "torch")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident set (VmHWM) to the current one
    base = status_kb("VmRSS")
    start = time.perf_counter()
    lp, grads = _fwd_bwd(fn, inputs, targets, g_lp, g_ent)
    seconds = time.perf_counter() - start
    peak_mb = (status_kb("VmHWM") - base) / 1024
    grad_mb = sum(g.numel() * g.element_size() for g in grads) / 2**20
    checksum = float(lp.double().sum())
    return dict(seconds=seconds, peak_mb=peak_mb, work_mb=peak_mb - grad_mb, checksum=checksum)


def _cpu_case(case: str, path: str, t: int, h: int) -> dict:
    code = (f"import json; from benchmarks.bench_kernels import measure_cpu; "
            f"print(json.dumps(measure_cpu({case!r}, {path!r}, {t}, {h})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")})
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cpu(quick: bool) -> dict:
    h = 256 if quick else H
    figures = {"cpu_V": V, "cpu_H": h, "cpu_dtype": "float32"}
    for t in ([256] if quick else [1024, 2048]):
        for case in ("lm_head", "logits"):
            naive = _cpu_case(case, "naive", t, h)
            ours = _cpu_case(case, "fused", t, h)
            if abs(naive["checksum"] - ours["checksum"]) > 1e-4 * abs(naive["checksum"]):
                raise RuntimeError(f"{case} T={t}: fused and naive logprobs disagree")
            key = f"cpu_{case}_T{t}"
            figures.update({
                f"{key}_naive_s": naive["seconds"], f"{key}_fused_s": ours["seconds"],
                f"{key}_speedup": naive["seconds"] / ours["seconds"],
                f"{key}_naive_peak_mb": naive["peak_mb"], f"{key}_fused_peak_mb": ours["peak_mb"],
                f"{key}_peak_ratio": ours["peak_mb"] / naive["peak_mb"],
                f"{key}_naive_work_mb": naive["work_mb"], f"{key}_fused_work_mb": ours["work_mb"],
                f"{key}_work_ratio": ours["work_mb"] / naive["work_mb"],
            })
    return figures


def _gpu_time(fn, inputs, targets, g_lp, g_ent, repeats: int):
    """(seconds per forward+backward, peak MB above the inputs), after one warm-up (Triton compiles there)."""
    _fwd_bwd(fn, inputs, targets, g_lp, g_ent)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        _fwd_bwd(fn, inputs, targets, g_lp, g_ent)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / repeats, (torch.cuda.max_memory_allocated() - base) / 2**20


def _fp32_reference(case: str, inputs, targets) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 logprobs and entropy of the same (bf16) inputs, 1024 tokens at a time."""
    lps, ents = [], []
    with torch.no_grad():
        for t0 in range(0, targets.shape[0], 1024):
            if case == "lm_head":
                logits = inputs[0][t0:t0 + 1024].float() @ inputs[1].float().t()
            else:
                logits = inputs[0][t0:t0 + 1024].float()
            lp, ent = _naive_logits(logits, targets[t0:t0 + 1024])
            lps.append(lp)
            ents.append(ent)
    return torch.cat(lps), torch.cat(ents)


def _gpu_paths(case: str) -> list[str]:
    """naive and fused always; Liger's fused linear cross entropy for the LM head where it imports."""
    paths = ["naive", "fused"]
    if case == "lm_head":
        try:
            import liger_kernel  # noqa: F401
            paths.append("liger")
        except ImportError:
            pass
    return paths


def _gpu_case(figures: dict, case: str, t: int) -> None:
    inputs, targets, g_lp, g_ent = _case_inputs(case, t, H, torch.bfloat16, "cuda")
    ref_lp, ref_ent = _fp32_reference(case, inputs, targets)
    for path in _gpu_paths(case):
        key = f"gpu_{case}_T{t}_{path}"
        fn = _path_fn(case, path, "triton")
        try:
            lp, ent = fn(*inputs, targets)
            figures[f"{key}_max_dlogprob"] = (lp.float() - ref_lp).abs().max().item()
            if ent is not None:
                figures[f"{key}_max_dentropy"] = (ent.float() - ref_ent).abs().max().item()
            del lp, ent
            seconds, peak = _gpu_time(fn, inputs, targets, g_lp, g_ent, repeats=3)
            figures.update({f"{key}_s": seconds, f"{key}_peak_mb": peak})
        except torch.OutOfMemoryError:
            figures[f"{key}_s"] = "oom"
        except Exception as e:  # a baseline that fails is recorded, not fatal
            figures[f"{key}_s"] = f"error: {type(e).__name__}: {str(e)[:200]}"
        torch.cuda.empty_cache()
    naive, fused = figures.get(f"gpu_{case}_T{t}_naive_s"), figures.get(f"gpu_{case}_T{t}_fused_s")
    if isinstance(naive, float) and isinstance(fused, float):
        figures[f"gpu_{case}_T{t}_speedup_vs_torch"] = naive / fused
    liger = figures.get(f"gpu_{case}_T{t}_liger_s")
    if isinstance(liger, float) and isinstance(fused, float):
        figures[f"gpu_{case}_T{t}_speedup_vs_liger"] = liger / fused
    figures[f"gpu_{case}_T{t}_full_logits_bf16_mb"] = t * V * 2 / 2**20


def _gpu_ppo(figures: dict, t: int) -> None:
    """ppo_loss forward+backward, Triton vs the torch backend, on [t] float32 tokens."""
    from areal_mega.kernels import ppo_loss

    g = torch.Generator(device="cuda").manual_seed(0)
    old = -4 * torch.rand(t, device="cuda", generator=g)
    lp = (old + 0.3 * torch.randn(t, device="cuda", generator=g)).requires_grad_(True)
    ref, adv = old + 0.2 * torch.randn(t, device="cuda", generator=g), torch.randn(t, device="cuda", generator=g)
    mask = torch.rand(t, device="cuda", generator=g) > 0.2
    for backend in ("torch", "triton"):
        def step():
            loss, _ = ppo_loss(lp, old, adv, mask, eps_clip_high=0.28, dual_clip=3.0, ref_logprobs=ref, kl_coef=0.01,
                               backend=backend)
            return torch.autograd.grad(loss, lp)
        step()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(10):
            step()
        end.record()
        torch.cuda.synchronize()
        figures[f"gpu_ppo_T{t}_{backend}_s"] = start.elapsed_time(end) / 1e3 / 10
    figures[f"gpu_ppo_T{t}_speedup_vs_torch"] = figures[f"gpu_ppo_T{t}_torch_s"] / figures[f"gpu_ppo_T{t}_triton_s"]


def _gpu(quick: bool) -> dict:
    """bf16 forward+backward on CUDA: time, peak memory above the inputs, and max |error| vs float32."""
    figures = {"gpu_H": H, "gpu_V": V, "gpu_dtype": "bfloat16", "gpu_triton_interpret": os.environ.get(
        "TRITON_INTERPRET", "0")}
    for t in ([4096] if quick else [4096, 16384, 32768]):
        _gpu_case(figures, "lm_head", t)
    for t in ([4096] if quick else [4096, 16384]):
        _gpu_case(figures, "logits", t)
    _gpu_ppo(figures, 1 << 16 if quick else 1 << 22)
    return figures


def main(quick: bool) -> dict:
    """The GPU figures on a CUDA machine, the CPU figures elsewhere (each is recorded where it was measured)."""
    return _gpu(quick) if torch.cuda.is_available() else _cpu(quick)
