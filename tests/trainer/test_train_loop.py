"""The training loop end to end on CPU: SFT through the engine, then RL with a reference server."""
import json
import subprocess
import sys

import pytest

from areal_mega.platform.device import free_port


def _train(config: str, overrides: list[str], tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-addr=127.0.0.1",
           f"--master-port={free_port()}", "-m", "areal_mega.train", "--config", config, *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-6000:]


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.multirank
def test_sft_then_rl_at_tp2(tmp_path):
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, str(repo / "launch/make_tiny_model.py"), str(tmp_path / "init")], check=True,
                   capture_output=True)
    _train(str(repo / "configs/quickstart/sft.yaml"), [
        f"engine.model_path={tmp_path / 'init'}", f"trainer.run_dir={tmp_path / 'sft'}",
        "trainer.stages=[{max_new_tokens: 16, steps: 40}]", "trainer.eval_samples=20",
    ], tmp_path)
    sft = _rows(tmp_path / "sft" / "metrics.jsonl")
    nll = [r["train/nll"] for r in sft if "train/nll" in r]
    assert len(nll) == 40 and sum(nll[-5:]) / 5 < 0.6 * sum(nll[:5]) / 5
    assert (tmp_path / "sft" / "hf" / "model.safetensors.index.json").is_file()

    _train(str(repo / "configs/quickstart/rl.yaml"), [
        f"engine.model_path={tmp_path / 'sft' / 'hf'}", f"trainer.run_dir={tmp_path / 'rl'}",
        "trainer.stages=[{max_new_tokens: 16, steps: 3}]", "trainer.eval_samples=20", "trainer.eval_every=0",
        "algo.kl_coef=0.001", "algo.adv_norm=batch",
    ], tmp_path)
    rows = [r for r in _rows(tmp_path / "rl" / "metrics.jsonl") if "reward/mean" in r]
    assert [r["weight_version"] for r in rows] == [1, 2, 3]
    for r in rows:
        # after each sync the servers generate with the trainer's weights
        assert r["logprob_diff_abs_max"] < 1e-3
        assert -5.0 <= r["reward/mean"] <= 5.0 and 0.0 <= r["reward/accuracy"] <= 1.0
        assert r["train/skipped"] == 0.0 and r["train/entropy"] > 0
        assert {"time/rollout", "time/logprobs", "time/train", "time/sync"} <= r.keys()
    summary = json.loads((tmp_path / "rl" / "summary.json").read_text())
    assert summary["steps"] == 3 and 0.0 <= summary["accuracy_after"] <= 1.0
