"""Servers the trainer launches itself (rollout.urls empty, on GPU) get GPUs torchrun did not give to ranks:
Session._start_servers -> trainer_server_gpus -> launch_servers(gpu_ids) -> SGLang's --base-gpu-id.
CUDA and the server processes are faked (this machine has neither a GPU nor SGLang)."""
import types

import pytest
import torch

import areal_mega.rollout.launcher as launcher
from areal_mega.cluster import ClusterConfig, PlacementError
from areal_mega.rollout.config import RolloutConfig
from areal_mega.trainer.session import Session


@pytest.fixture
def started(monkeypatch, tmp_path):
    """Fake 8 GPUs and record every server command instead of running it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    cmds = []

    class Proc:
        pid, returncode = 0, 0

        def __init__(self, cmd, **kwargs):
            cmds.append(cmd)

        def poll(self):
            return None

    monkeypatch.setattr(launcher.subprocess, "Popen", Proc)
    monkeypatch.setattr(launcher, "wait_healthy", lambda *a, **k: None)
    return cmds


def _session(tmp_path, generation_gpus, num_servers):
    cfg = types.SimpleNamespace(
        rollout=RolloutConfig(backend="sglang", num_servers=num_servers, tp_size=1, max_retries=0),
        cluster=ClusterConfig(generation_gpus=generation_gpus),
        engine=types.SimpleNamespace(model_path=str(tmp_path)))
    s = types.SimpleNamespace(cfg=cfg, run_dir=tmp_path / "run", _health=lambda retries=0: [True] * num_servers)
    return s


def test_servers_go_on_the_gpus_torchrun_left_free(started, tmp_path, monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "6")
    s = _session(tmp_path, generation_gpus=2, num_servers=2)
    Session._start_servers(s)
    assert [c[c.index("--base-gpu-id") + 1] for c in started] == ["6", "7"]
    assert len(s.urls) == 2


def test_servers_on_a_rank_gpu_are_refused_before_any_starts(started, tmp_path, monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # torchrun filled every GPU
    with pytest.raises(PlacementError, match=r"would share GPUs; run torchrun --nproc-per-node 6"):
        Session._start_servers(_session(tmp_path, generation_gpus=2, num_servers=2))
    with pytest.raises(PlacementError, match=r"set cluster\.generation_gpus"):
        Session._start_servers(_session(tmp_path, generation_gpus=0, num_servers=1))
    assert started == []
