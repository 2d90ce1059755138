"""Waits end: a dead rank or a dead server ends in a clear error within a bounded time, never a hang."""
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from areal_mega.platform.device import free_port


def _rank_env(rank: int, port: int) -> dict:
    return dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(port), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _survivor(model_dir, mode: str, wait: str, timeout_s: float,
              default_timeout_s: float = 600.0) -> tuple[int, str, float]:
    """Run worker_timeouts' two ranks; returns (rank 1's exit code, its output, seconds from WAITING to exit)."""
    port = free_port()
    cmd = [sys.executable, "-m", "tests.weight_sync.worker_timeouts", "--model", str(model_dir), "--mode", mode,
           "--wait", wait, "--timeout-s", str(timeout_s), "--default-timeout-s", str(default_timeout_s)]
    ranks = [subprocess.Popen(cmd, env=_rank_env(r, port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True) for r in range(2)]
    lines, waiting = [], threading.Event()
    stamps = {}

    def read():
        for line in ranks[1].stdout:
            lines.append(line)
            if line.startswith("WAITING"):
                stamps["waiting"] = time.monotonic()
                waiting.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert waiting.wait(300), "rank 1 never reached its wait:\n" + "".join(lines)[-3000:]
        code = ranks[1].wait(timeout=timeout_s + 120)  # a hang fails here instead of blocking the suite
        elapsed = time.monotonic() - stamps["waiting"]
        reader.join(10)
        return code, "".join(lines), elapsed
    finally:
        for p in ranks:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


@pytest.mark.multirank
@pytest.mark.slow
def test_dead_controller_ends_the_wait_for_a_batch_at_once(tiny_qwen2_dir):
    """Rank 0 killed while rank 1 waits in Engine.forward for the batch: rank 1 fails within seconds, long
    before its 4-hour time-out, saying a peer closed the connection."""
    code, out, elapsed = _survivor(tiny_qwen2_dir, "kill", "forward", timeout_s=4 * 3600)
    assert code != 0 and "the wait returned" not in out
    assert "Connection closed by peer" in out, out[-3000:]
    assert elapsed < 60


@pytest.mark.multirank
@pytest.mark.slow
def test_hung_controller_ends_the_wait_at_engine_collective_timeout(tiny_qwen2_dir):
    """Rank 0 alive but stuck: rank 1, waiting for the server URLs, fails after engine.collective_timeout_s
    (5 s here; torch's default would be 30 min) with a message naming its wait."""
    code, out, elapsed = _survivor(tiny_qwen2_dir, "hang", "join", timeout_s=5.0)
    assert code != 0 and "the wait returned" not in out
    assert "weight sync: rank 1 lost the job while waiting for the server URLs" in out, out[-3000:]
    assert "Timed out" in out or "timed out" in out
    assert 4.0 <= elapsed < 60


@pytest.mark.multirank
@pytest.mark.slow
def test_servers_starting_longer_than_the_default_group_timeout_do_not_fail_the_wait(tiny_qwen2_dir):
    """On resume the controller starts its servers (and waits for their /health) before the weight-sync join,
    while the other ranks, rank 0's TP peers among them, wait for the URLs in the engine's gloo group
    (engine.collective_timeout_s), not in the default group: with the default group's time-out at 2 s and a
    controller 6 s late, rank 1's wait returns. (Their TP all-gathers in iter_hf_weights come later, inside
    the sync, where each waits at most for one bucket's broadcast, bounded by weight_sync.timeout_s.)"""
    code, out, elapsed = _survivor(tiny_qwen2_dir, "slow", "join", timeout_s=120.0, default_timeout_s=2.0)
    assert code == 0 and "rank 1: the wait returned" in out, out[-3000:]
    assert elapsed >= 5.0
