"""Run a worker module under torchrun (gloo on 127.0.0.1, a free port) and read its JSON results.

Every command runs in its own process group, and a time-out kills the whole
group (torchrun and its ranks; the servers a rank launched follow their rank,
rollout/launcher.py), so a hung test leaves no orphans burning the CPUs.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from areal_mega.platform.device import free_port


def run_group(cmd: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    """subprocess.run(cmd, capture_output, text) in a new session; on time-out SIGKILL its process group and re-raise."""
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise subprocess.TimeoutExpired(cmd, timeout, out, err) from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def exits_within(pid: int, timeout_s: float) -> bool:
    """Whether process `pid` is gone (or a zombie: exited, not yet reaped) within `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if open(f"/proc/{pid}/stat").read().split()[2] == "Z":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


def torchrun(module: str, nproc: int, args: list[str], out_dir: Path, timeout: float = 600) -> list[dict]:
    """Run `python -m torch.distributed.run -m module args`; returns rank r's `out_dir/rank{r}.json`.

    The worker gets `--out out_dir` appended and must write one JSON per rank.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
        "--master-addr=127.0.0.1", f"--master-port={free_port()}", "-m", module, *args, "--out", str(out_dir),
    ]
    proc = run_group(cmd, env, timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(nproc)]


def train_cmd(nproc: int, config: str | Path, overrides: list[str]) -> list[str]:
    """`python -m torch.distributed.run ... -m areal_mega.train --config CONFIG OVERRIDES` on 127.0.0.1, a free port."""
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--master-addr=127.0.0.1",
            f"--master-port={free_port()}", "-m", "areal_mega.train", "--config", str(config), *overrides]


def run_train(nproc: int, config: str | Path, overrides: list[str], timeout: float = 600) -> None:
    """Run `train_cmd` to the end (OMP_NUM_THREADS=1); a non-zero exit fails with the end of its stderr."""
    proc = run_group(train_cmd(nproc, config, overrides), dict(os.environ, OMP_NUM_THREADS="1"), timeout)
    assert proc.returncode == 0, proc.stderr[-6000:]
