"""Faults the RL loop survives (a server lost mid-run) or reports clearly (no server at start)."""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from areal_mega.platform.device import free_port
from tests.distributed import train_cmd

REPO = Path(__file__).resolve().parents[2]


def _cmd(model_dir, run_dir, steps, urls, extra=()):
    return train_cmd(1, REPO / "configs/quickstart/rl.yaml", [
        f"engine.model_path={model_dir}", f"trainer.run_dir={run_dir}", "engine.parallel.tp=1",
        f"trainer.stages=[{{max_new_tokens: 16, steps: {steps}}}]", "trainer.eval_samples=8", "trainer.export_hf=false",
        "data.batch_size=8", "rollout.n_samples=4", f"rollout.urls=[{','.join(urls)}]", *extra])


@pytest.mark.multirank
def test_no_server_at_start_is_a_clear_error(model_dir, tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.run(_cmd(model_dir, tmp_path, 2, [url], ["rollout.max_retries=1"]), capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0
    assert "not answering /health after 2 tries" in proc.stderr and url in proc.stderr


@pytest.mark.slow
@pytest.mark.multirank
def test_server_lost_mid_run_training_goes_on(model_dir, tmp_path):
    from areal_mega.rollout import launch_servers

    with launch_servers(model_dir, 2, log_dir=tmp_path / "logs") as pool:
        run_dir = tmp_path / "run"
        proc = subprocess.Popen(_cmd(model_dir, run_dir, 6, pool.urls), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        metrics = run_dir / "metrics.jsonl"
        deadline = time.time() + 300
        while not (metrics.exists() and '"reward/mean"' in metrics.read_text()):
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-3000:]
            time.sleep(0.2)
        os.killpg(pool.procs[1].pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    steps = [r for r in rows if "reward/mean" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    assert sum(r.get("rollout/servers_lost", 0.0) for r in steps) == 1.0
    assert all(r["logprob_diff_abs_max"] < 1e-3 for r in steps)  # the survivor keeps getting new weights
    assert "continuing without them" in out and pool.urls[1] in out
