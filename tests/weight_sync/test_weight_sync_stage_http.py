"""The controller's HTTP side of `StageWeightSync`: kept connections, no /health probe while the servers
answer, and a server that died between two syncs found by the failed pause and dropped (worker_stage_sync)."""
import json
import os
import sys

import pytest

from areal_mega.platform.device import free_port
from tests.distributed import run_group


@pytest.fixture(scope="module")
def wire(tiny_qwen2_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("stage_http") / "result.json"
    env = dict(os.environ, RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(free_port()), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = run_group([sys.executable, "-m", "tests.weight_sync.worker_stage_sync", "--model", str(tiny_qwen2_dir),
                      "--out", str(out)], env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_syncs_reuse_their_connections_to_the_servers(wire):
    """The same TCP connections (local ports) carry syncs 1, 2 and 3: no new session per phase or per sync."""
    first = wire["ports"][0]
    assert len(first) >= 2, wire["ports"]  # at least one kept connection per server
    assert wire["ports"] == [first, first, first]
    assert wire["versions"][:3] == [["1", "1"], ["2", "2"], ["3", "3"]]


@pytest.mark.slow
def test_no_health_probe_while_every_server_answers_the_pause(wire):
    assert wire["probes"][:3] == [0, 0, 0]


@pytest.mark.slow
def test_server_killed_between_syncs_is_probed_and_dropped(wire):
    """The pause fails on the dead server, the probe finds it, the group is rebuilt without it and the
    sync completes on the survivor."""
    assert wire["probes"][3] == 2  # both servers probed once, after the failed pause
    assert wire["lost"] == 1.0
    assert len(wire["urls"]) == 1
    assert wire["versions"][3] == ["4"]


@pytest.mark.slow
def test_pause_refused_by_a_live_server_fails_naming_it(wire):
    msg = wire["refused"]
    assert "pausing generation failed on rank 0 (every server answers /health)" in msg
    assert "no-such-mode" in msg and wire["urls"][0] in msg
