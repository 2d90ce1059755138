"""vLLM backend without a server: the launcher's command, environment and head_dim check; the protocol's
translation of sampling parameters, control-plane calls and response parsing (bodies as vLLM 0.32 writes them)."""
import json

import pytest

from areal_mega.rollout.launcher import check_servable, server_command, server_env
from areal_mega.rollout.protocol import Sample, protocol_for
from areal_mega.rollout.protocol_vllm import sampling_params

TORCHRUN = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "0",
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "TORCHELASTIC_USE_AGENT_STORE": "True",
            "TORCHELASTIC_RUN_ID": "x", "ROLE_RANK": "0", "ROLE_NAME": "default", "PATH": "/bin", "HOME": "/root"}


def test_server_env_strips_torchrun_for_every_backend():
    for backend in ("reference", "sglang", "vllm"):
        env = server_env(backend, 0, 1, {"EXTRA": "1"}, base=TORCHRUN, on_gpu=False)
        assert {k for k in env if k in TORCHRUN} == {"PATH", "HOME"}, backend
        assert env["EXTRA"] == "1"
    cpu = server_env("vllm", 0, 1, base=TORCHRUN, on_gpu=False)
    assert cpu["VLLM_SERVER_DEV_MODE"] == "1" and cpu["VLLM_CPU_KVCACHE_SPACE"] == "1"
    gpu = server_env("vllm", 2, 2, base=TORCHRUN, on_gpu=True)
    assert gpu["CUDA_VISIBLE_DEVICES"] == "2,3" and "VLLM_CPU_KVCACHE_SPACE" not in gpu


def test_vllm_command_gpu_and_cpu():
    gpu = server_command("vllm", "/m", "127.0.0.1", 8000, "k", 4, 0.85, 0, on_gpu=True)
    assert gpu[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    def flag(cmd, name):
        return cmd[cmd.index(name) + 1]

    assert flag(gpu, "--model") == "/m" and flag(gpu, "--tensor-parallel-size") == "4"
    assert flag(gpu, "--gpu-memory-utilization") == "0.85" and flag(gpu, "--api-key") == "k"
    assert flag(gpu, "--logprobs-mode") == "processed_logprobs"
    assert json.loads(gpu[gpu.index("--weight-transfer-config") + 1]) == {"backend": "areal"}
    assert "--enforce-eager" not in gpu
    cpu = server_command("vllm", "/m", "127.0.0.1", 8000, None, 1, 0.85, 0, on_gpu=False)
    assert flag(cpu, "--gpu-memory-utilization") == "0.1" and "--enforce-eager" in cpu
    assert "--no-enable-chunked-prefill" in cpu and "--no-enable-chunked-prefill" not in gpu
    with pytest.raises(ValueError, match="api_key"):  # dev-mode routes on an open network without a key
        server_command("vllm", "/m", "0.0.0.0", 8000, None, 1, 0.8, 0, on_gpu=True)


def test_head_dim_refused_before_start(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 64, "num_attention_heads": 4}))
    with pytest.raises(ValueError, match="head_dim 16"):
        check_servable("vllm", tmp_path, on_gpu=False)
    check_servable("vllm", tmp_path, on_gpu=True)  # GPU attention serves it
    check_servable("reference", tmp_path, on_gpu=False)
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 128, "num_attention_heads": 4}))
    check_servable("vllm", tmp_path, on_gpu=False)


def test_sampling_params_translated():
    out = sampling_params({"temperature": 0.7, "top_p": 0.9, "top_k": -1, "max_new_tokens": 16,
                           "stop_token_ids": [1], "sampling_seed": 5, "n": 2, "ignore_eos": False})
    assert out == {"temperature": 0.7, "top_p": 0.9, "top_k": 0, "max_tokens": 16, "stop_token_ids": [1],
                   "seed": 5, "n": 2, "ignore_eos": False, "logprobs": 0}


def test_parse_generate_and_versions():
    proto = protocol_for("vllm")
    body = {"choices": [
        {"index": 1, "finish_reason": "length", "token_ids": [7, 8],
         "logprobs": {"content": [{"token_id": 7, "logprob": -0.5}, {"token_id": 8, "logprob": -1.5}]},
         "weight_versions": [{"version": "3", "start": 0, "end": 1}, {"version": "4", "start": 1, "end": 2}]},
        {"index": 0, "finish_reason": "stop", "stop_reason": 1, "token_ids": [5, 1],
         "logprobs": {"content": [{"token_id": 5, "logprob": -0.1}, {"token_id": 1, "logprob": -0.2}]},
         "weight_versions": [{"version": "4", "start": 0, "end": 2}]},
        {"index": 2, "finish_reason": "abort", "token_ids": [], "logprobs": None, "weight_versions": None},
    ]}
    assert proto.parse_generate(body) == [Sample([5, 1], [-0.1, -0.2], "stop", "4"),
                                          Sample([7, 8], [-0.5, -1.5], "length", "3"),  # oldest span
                                          Sample([], [], "abort", "")]
    bad = {"choices": [{"index": 0, "token_ids": [5], "logprobs": {"content": [{"token_id": 6, "logprob": 0.0}]}}]}
    with pytest.raises(ValueError, match="disagree"):
        proto.parse_generate(bad)


def test_control_plane_calls():
    proto = protocol_for("vllm")
    assert (proto.pause("abort").path, proto.pause("abort").query) == ("/pause", {"mode": "abort"})
    assert proto.pause("in_place").query == {"mode": "keep"}
    init = proto.init_group("10.0.0.1", 1234, 1, 3, "g", "gloo")
    assert init.path == "/init_weight_transfer_engine" and init.payload["init_info"]["rank_offset"] == 1
    bucket = proto.update_bucket(["a"], ["float32"], [[2, 3]], "g", "7")
    assert bucket.payload == {"update_info": {"names": ["a"], "dtype_names": ["float32"], "shapes": [[2, 3]]}}
    assert proto.finish_update("7").payload == {"weight_version": "7"}
    sglang = protocol_for("sglang")  # 0.5.23 accepts buckets only inside a begin/end session
    assert (sglang.start_update().path, sglang.finish_update("7").path) == ("/begin_weight_update", "/end_weight_update")
    # an update a failed sync left open is closed without a version (it stays the old one)
    assert (proto.close_update().path, proto.close_update().payload) == ("/finish_weight_update", {})
    assert protocol_for("sglang").close_update().path == "/end_weight_update"
    with pytest.raises(ValueError, match="unknown generation backend"):
        protocol_for("trtllm")


def test_run_config_refuses_vllm_without_a_pause():
    from areal_mega.config import ConfigError, load_config
    from areal_mega.trainer.config import RunConfig

    base = ["engine.model_path=/m", "rollout.backend=vllm"]
    assert load_config(RunConfig, overrides=base).weight_sync.pause_mode == "abort"
    with pytest.raises(ConfigError, match="pause_mode=none with rollout.backend=vllm"):
        load_config(RunConfig, overrides=[*base, "weight_sync.pause_mode=none"])
