"""Checkpoint and resume of the RL loop: 4 straight steps == 2 steps + stop + resume + 2 steps; SIGTERM saves."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from areal_mega.platform.device import free_port

REPO = Path(__file__).resolve().parents[2]
KEYS = ["reward/mean", "response_length/mean", "train/loss", "train/grad_norm", "train/entropy",
        "train/approx_kl", "kl_reward", "logprob_diff_abs_mean"]


def _cmd(model_dir, run_dir, steps):
    # adv_norm=none with a KL term: advantages are the (nonzero) reward-to-go even
    # when an untrained model gets every answer wrong, so every step moves the weights
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-addr=127.0.0.1",
            f"--master-port={free_port()}", "-m", "areal_mega.train", "--config",
            str(REPO / "configs/quickstart/rl.yaml"), f"engine.model_path={model_dir}", f"trainer.run_dir={run_dir}",
            f"trainer.stages=[{{max_new_tokens: 16, steps: {steps}}}]", "trainer.eval_samples=8",
            "trainer.eval_every=0", "trainer.export_hf=false", "algo.adv_norm=none", "algo.kl_coef=0.01",
            "data.batch_size=4", "rollout.n_samples=2"]


def _run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-5000:]


def _steps(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if "train/loss" in r}


@pytest.mark.slow
@pytest.mark.multirank
def test_resume_continues_the_same_run(model_dir, tmp_path):
    _run(_cmd(model_dir, tmp_path / "straight", 4))
    _run(_cmd(model_dir, tmp_path / "resumed", 2))
    assert (tmp_path / "resumed" / "checkpoints" / "step_000002").is_dir()
    _run(_cmd(model_dir, tmp_path / "resumed", 4))
    straight, resumed = _steps(tmp_path / "straight"), _steps(tmp_path / "resumed")
    assert sorted(straight) == sorted(resumed) == [1, 2, 3, 4]
    assert straight[4]["train/loss"] != straight[3]["train/loss"]
    for step in range(1, 5):
        for key in KEYS:
            assert resumed[step][key] == pytest.approx(straight[step][key], rel=1e-6, abs=1e-6), (step, key)
    assert resumed[4]["weight_version"] == straight[4]["weight_version"] == 4


@pytest.mark.slow
@pytest.mark.multirank
def test_sigterm_writes_a_checkpoint_and_exits(model_dir, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(_cmd(model_dir, run_dir, 200), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 300
    while time.time() < deadline and not (run_dir / "metrics.jsonl").exists() or not _steps_safe(run_dir):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)  # torchrun forwards it to both ranks and exits non-zero itself
    _, err = proc.communicate(timeout=300)
    last = max(_steps(run_dir))
    assert last < 200
    assert (run_dir / "checkpoints" / f"step_{last:06d}").is_dir(), err[-3000:]
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == f"step_{last:06d}"


def _steps_safe(run_dir):
    try:
        return _steps(run_dir)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
