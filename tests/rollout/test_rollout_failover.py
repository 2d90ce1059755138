"""A server dying mid-rollout, all servers down, a server dying at start, servers dying with their launcher, batches on disk."""
import asyncio
import json
import os
import signal
import subprocess
import sys

import pytest

from areal_mega.platform.device import free_port
from areal_mega.rollout.client import AllServersDownError, GenerationClient
from areal_mega.rollout.launcher import ServerStartError, launch_servers
from areal_mega.rollout.manager import RolloutBatch, generate, generate_sync
from tests.distributed import exits_within


class CountingClient(GenerationClient):
    """Counts finished /generate calls, so the test can kill a server mid-rollout."""

    done = 0

    async def generate(self, *args, **kwargs):
        out = await super().generate(*args, **kwargs)
        self.done += 1
        return out


@pytest.mark.multirank
@pytest.mark.slow
def test_kill_one_of_two_servers_mid_rollout_keeps_all_64_samples(tiny_qwen2_dir, tmp_path):
    prompts = [[5 + i, 6, 7] for i in range(8)]
    params = {"temperature": 1.0, "max_new_tokens": 48, "ignore_eos": True}
    with launch_servers(tiny_qwen2_dir, 2) as pool:
        client = CountingClient(pool.urls, max_concurrency=16, health_interval_s=60.0)

        async def run():
            task = asyncio.ensure_future(generate(client, prompts, 8, params, quiet=True))
            while client.done < 8:
                await asyncio.sleep(0.01)
            killed_at = client.done
            os.killpg(pool.procs[0].pid, signal.SIGKILL)
            batch = await task
            await client.close()
            return killed_at, batch

        killed_at, batch = asyncio.run(run())
        assert killed_at < 64
        assert len(batch) == 64
        assert batch.prompt_index == [i for i in range(8) for _ in range(8)]
        assert all(len(r) == 48 for r in batch.response_ids)
        assert all(len(lp) == 48 and all(x <= 0 for x in lp) for lp in batch.rollout_logprobs)
        assert set(batch.finish_reasons) == {"length"}
        assert not client.servers[0].healthy and client.servers[1].healthy
        assert batch.metrics["gen_tokens"] == 64 * 48 and batch.metrics["gen_tokens_per_s"] > 0

        path = tmp_path / "batch.json"
        batch.save(path)
        loaded = RolloutBatch.load(path)
        assert loaded.response_ids == batch.response_ids and loaded.rollout_logprobs == batch.rollout_logprobs

        pool.procs[1].kill()
        pool.procs[1].wait()
        down = GenerationClient(pool.urls, max_retries=2, retry_backoff_s=0.05, health_interval_s=0.0)
        with pytest.raises(AllServersDownError, match=pool.urls[1].replace(".", r"\.")):
            generate_sync(down, prompts[:1], 1, params, quiet=True)


def test_server_back_after_health_check(tiny_qwen2_dir):
    with launch_servers(tiny_qwen2_dir, 1) as pool:
        client = GenerationClient(pool.urls, health_interval_s=0.0)
        client._mark_down(client.servers[0], "pretend failure")
        batch = generate_sync(client, [[5, 6]], 2, {"temperature": 0, "max_new_tokens": 4}, quiet=True)
        assert len(batch) == 2 and client.servers[0].healthy
        with pytest.raises(ValueError, match="temperature"):
            generate_sync(client, [[5, 6]], 1, {"temperature": -1.0}, quiet=True)


def test_server_dying_at_start_reports_its_log(tmp_path):
    empty = tmp_path / "not_a_model"
    empty.mkdir()
    with pytest.raises(ServerStartError, match="exited with code") as info:
        launch_servers(empty, 1, base_port=free_port(), log_dir=tmp_path / "logs", start_timeout_s=120)
    assert "not_a_model has no config.json" in str(info.value)  # the log tail says what failed


def test_rollout_batch_load_names_file_and_field(tmp_path):
    batch = RolloutBatch([0], [[1, 2]], [[3, 4]], [[-0.1, -0.2]], ["stop"], ["1"])
    path = tmp_path / "b.json"
    batch.save(path)
    data = json.loads(path.read_text())
    data["rollout_logprobs"] = [[-0.1]]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"b\.json: sample 0: 2 response tokens but 1 rollout_logprobs"):
        RolloutBatch.load(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"b\.json: not a rollout batch"):
        RolloutBatch.load(path)


def test_servers_die_with_a_killed_launcher(tiny_qwen2_dir, tmp_path):
    """A trainer killed by SIGKILL (a test time-out, an OOM kill) takes its servers with it, not orphans them."""
    script = ("import sys, time\n"
              "from areal_mega.rollout.launcher import launch_servers\n"
              f"pool = launch_servers({str(tiny_qwen2_dir)!r}, 1)\n"
              "print(pool.procs[0].pid, flush=True)\n"
              "time.sleep(600)\n")
    launcher = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        server_pid = int(launcher.stdout.readline())
        os.kill(server_pid, 0)  # running
        launcher.kill()
        launcher.wait()
        if not exits_within(server_pid, 30):
            os.kill(server_pid, signal.SIGKILL)
            raise AssertionError(f"server {server_pid} outlived its killed launcher by 30 s")
    finally:
        launcher.kill()
