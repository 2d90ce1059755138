"""Start N generation servers (SGLang on GPU, the reference server on CPU), wait for health, stop cleanly.

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
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from areal_mega.platform.device import free_port


class ServerStartError(RuntimeError):
    """A server died or never became healthy; the message carries its log tail."""


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


def server_command(backend: str, model_dir: str, host: str, port: int, api_key: str | None, tp_size: int,
                   mem_fraction: float, gpu_id: int, extra_args=()) -> list[str]:
    """The command line of one server."""
    if backend == "reference":
        if tp_size != 1:
            raise ValueError(f"tp_size: the reference server runs one process (tp_size=1), got {tp_size}")
        cmd = [sys.executable, "-m", "areal_mega.rollout.server", "--model", str(model_dir),
               "--host", host, "--port", str(port)]
    elif backend == "sglang":
        cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", str(model_dir), "--host", host,
               "--port", str(port), "--tp-size", str(tp_size), "--mem-fraction-static", str(mem_fraction),
               "--base-gpu-id", str(gpu_id)]
    else:
        raise ValueError(f"backend: unknown backend {backend!r} (reference or sglang)")
    if api_key:
        cmd += ["--api-key", api_key]
    return cmd + list(extra_args)


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
) -> ServerPool:
    """Start `num_servers` servers of `backend` on `host` (ports base_port + i, or free ones) and wait for /health.

    gpu_ids: server i's first GPU (it uses tp_size from there); default i * tp_size.
    """
    if num_servers < 1:
        raise ValueError(f"num_servers must be >= 1, got {num_servers}")
    if gpu_ids is not None and len(gpu_ids) != num_servers:
        raise ValueError(f"gpu_ids: {len(gpu_ids)} first-GPU ids for {num_servers} servers")
    if not Path(model_dir).is_dir():
        raise ValueError(f"model_dir: {model_dir} is not a directory")
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="areal_mega_servers_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    urls, procs, logs = [], [], []
    pool = ServerPool(urls, procs, logs, api_key)
    try:
        for i in range(num_servers):
            port = base_port + i if base_port is not None else free_port(host)
            gpu = gpu_ids[i] if gpu_ids is not None else i * tp_size
            cmd = server_command(backend, str(model_dir), host, port, api_key, tp_size, mem_fraction, gpu,
                                 extra_args)
            log = log_dir / f"server_{i}.log"
            with open(log, "wb") as f:
                procs.append(subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                              env={**os.environ, **(env or {})}))
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
    parser.add_argument("--backend", default="reference", choices=["reference", "sglang"])
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
