"""Checkpoint and resume of the RL loop: 4 straight steps == 2 steps + stop + resume + 2 steps; SIGTERM saves.

The straight run is also compared with golden metrics, tests/assets/losses/rl_quickstart_tp2.json.
After an intended change of the numbers, regenerate that file (the test then writes it instead of comparing):
    AREAL_MEGA_UPDATE_GOLDEN=1 TRITON_INTERPRET=1 OMP_NUM_THREADS=1 \\
        python -m pytest -p no:cacheprovider tests/trainer/test_resume.py -k continues
"""
import json
import os
import platform
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.distributed import run_train, train_cmd

REPO = Path(__file__).resolve().parents[2]
KEYS = ["reward/mean", "response_length/mean", "train/loss", "train/grad_norm", "train/entropy",
        "train/approx_kl", "kl_reward", "logprob_diff_abs_mean"]
CONFIG = "configs/quickstart/rl.yaml"
GOLDEN = REPO / "tests/assets/losses/rl_quickstart_tp2.json"
# Runs on one machine repeat bit for bit. Forcing other CPU kernels (ATEN_CPU_CAPABILITY=avx2 / default
# against the AVX512 golden) moved loss and grad_norm by <= 3e-7 relative and the noise-level metrics
# (approx_kl ~1e-14, logprob_diff_abs_mean ~2e-7, kl_reward) by <= 8e-8 absolute; samples did not change.
RTOL, ATOL = 1e-4, 1e-6


def _overrides(steps):
    # adv_norm=none with a KL term: advantages are the (nonzero) reward-to-go even
    # when an untrained model gets every answer wrong, so every step moves the weights
    # the layout and sampling are pinned here (TP=2, T=1.5, rows of <= 256 tokens, lr 2e-4), so the quickstart's own
    # choices can change without moving the golden numbers
    return [f"trainer.stages=[{{max_new_tokens: 16, steps: {steps}}}]", "trainer.eval_samples=8",
            "trainer.eval_every=0", "trainer.export_hf=false", "algo.adv_norm=none", "algo.kl_coef=0.01",
            "data.batch_size=4", "rollout.n_samples=2", "engine.parallel.tp=2", "rollout.temperature=1.5",
            "engine.max_tokens_per_micro_batch=256", "engine.optimizer.lr=2.0e-4"]


def _args(model_dir, run_dir, steps):
    return [f"engine.model_path={model_dir}", f"trainer.run_dir={run_dir}", *_overrides(steps)]


def _cmd(model_dir, run_dir, steps):
    return train_cmd(2, REPO / CONFIG, _args(model_dir, run_dir, steps))


def _run(model_dir, run_dir, steps):
    run_train(2, REPO / CONFIG, _args(model_dir, run_dir, steps))


def _steps(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if "train/loss" in r}


@pytest.mark.slow
@pytest.mark.multirank
def test_resume_continues_the_same_run(model_dir, tmp_path):
    _run(model_dir, tmp_path / "straight", 4)
    _run(model_dir, tmp_path / "resumed", 2)
    assert (tmp_path / "resumed" / "checkpoints" / "step_000002").is_dir()
    _run(model_dir, tmp_path / "resumed", 4)
    straight, resumed = _steps(tmp_path / "straight"), _steps(tmp_path / "resumed")
    assert sorted(straight) == sorted(resumed) == [1, 2, 3, 4]
    assert straight[4]["train/loss"] != straight[3]["train/loss"]
    for step in range(1, 5):
        for key in KEYS:
            assert resumed[step][key] == pytest.approx(straight[step][key], rel=1e-6, abs=1e-6), (step, key)
    assert resumed[4]["weight_version"] == straight[4]["weight_version"] == 4
    _check_golden({step: {key: row[key] for key in KEYS} for step, row in straight.items()}, _overrides(4))


def _check_golden(actual: dict, overrides: list[str]) -> None:
    """The straight run's KEYS metrics `{step: {key: value}}` against GOLDEN (written there instead
    when AREAL_MEGA_UPDATE_GOLDEN=1)."""
    if os.environ.get("AREAL_MEGA_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps({
            "note": "Metrics of the straight 4-step run in tests/trainer/test_resume.py (tiny quickstart model from "
                    "launch/make_tiny_model.py, seed 0; TP=2 on CPU, OMP_NUM_THREADS=1). Regenerate after an "
                    "intended change of the numbers: AREAL_MEGA_UPDATE_GOLDEN=1 TRITON_INTERPRET=1 OMP_NUM_THREADS=1 "
                    "python -m pytest -p no:cacheprovider tests/trainer/test_resume.py -k continues",
            "generated_with": {"torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability(),
                               "machine": platform.machine()},
            "config": CONFIG, "overrides": overrides,
            "steps": {str(step): row for step, row in sorted(actual.items())},
        }, indent=2) + "\n")
        return
    golden = json.loads(GOLDEN.read_text())
    assert golden["config"] == CONFIG and golden["overrides"] == overrides, \
        f"the run differs from the one {GOLDEN.name} was made with; regenerate it (see its note)"
    assert sorted(golden["steps"]) == sorted(str(step) for step in actual)
    for step, row in actual.items():
        for key in KEYS:
            want, got = golden["steps"][str(step)][key], row[key]
            assert got == pytest.approx(want, rel=RTOL, abs=ATOL), f"step {step} {key}: golden {want!r}, actual {got!r}"


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
