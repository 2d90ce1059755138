"""Run a worker module under torchrun (gloo on 127.0.0.1, a free port) and read its JSON results."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from areal_mega.platform.device import free_port


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
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(nproc)]


def train_cmd(nproc: int, config: str | Path, overrides: list[str]) -> list[str]:
    """`python -m torch.distributed.run ... -m areal_mega.train --config CONFIG OVERRIDES` on 127.0.0.1, a free port."""
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--master-addr=127.0.0.1",
            f"--master-port={free_port()}", "-m", "areal_mega.train", "--config", str(config), *overrides]


def run_train(nproc: int, config: str | Path, overrides: list[str], timeout: float = 600) -> None:
    """Run `train_cmd` to the end (OMP_NUM_THREADS=1); a non-zero exit fails with the end of its stderr."""
    proc = subprocess.run(train_cmd(nproc, config, overrides), capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-6000:]
