"""The controller's rollouts run on one kept event loop and client (Session._generate_on_servers): the second
rollout goes over the first one's TCP connections; a changed server list gets a new client."""
from types import SimpleNamespace

import psutil
import pytest

from areal_mega.rollout.config import RolloutConfig
from areal_mega.rollout.launcher import launch_servers
from areal_mega.trainer.session import Session


def _ports(urls: list[str]) -> set[int]:
    targets = {int(u.rsplit(":", 1)[1]) for u in urls}
    return {c.laddr.port for c in psutil.Process().net_connections(kind="tcp")
            if c.raddr and c.raddr.port in targets and c.status == psutil.CONN_ESTABLISHED}


@pytest.mark.slow
def test_rollouts_reuse_the_kept_client_until_the_servers_change(tiny_qwen2_dir):
    params = {"temperature": 1.0, "max_new_tokens": 4, "sampling_seed": 3}
    prompts = [[5, 6, 7], [20, 21]]
    with launch_servers(tiny_qwen2_dir, 2) as pool:
        s = Session.__new__(Session)  # only what the rollout path reads
        s.cfg = SimpleNamespace(rollout=RolloutConfig(backend="reference"))
        s.urls, s._loop, s._gen_client, s.weights = list(pool.urls), None, None, None
        s.is_controller, s.stream, s.servers = False, None, None
        try:
            first = s._generate_on_servers(prompts, 4, params)
            client, ports = s._gen_client, _ports(pool.urls)
            assert len(first) == 8 and ports  # connections stay open between rollouts
            second = s._generate_on_servers(prompts, 4, params)
            assert s._gen_client is client and _ports(pool.urls) == ports
            assert second.response_ids == first.response_ids  # same seeds, same samples
            s.urls = pool.urls[:1]  # a server left the pool (weight sync dropped it)
            s._generate_on_servers(prompts, 4, params)
            assert s._gen_client is not client and s._gen_client.urls == pool.urls[:1]
        finally:
            s.close()
        assert s._loop.is_closed()
