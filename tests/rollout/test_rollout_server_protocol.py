"""The reference server against SGLang's /generate protocol, and against a plain transformers forward."""
import pytest
import requests
import torch
from rollout_refs import greedy_decode, response_logprobs

from areal_mega.rollout.launcher import launch_servers

KEY = "secret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def server(tiny_qwen2_dir):
    with launch_servers(tiny_qwen2_dir, 1, api_key=KEY) as pool:
        yield pool.urls[0]


@pytest.fixture(scope="module")
def hf_model(tiny_qwen2_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(tiny_qwen2_dir), dtype=torch.float32).eval()


def post(url, body, headers=AUTH):
    return requests.post(url + "/generate", json=body, headers=headers, timeout=60)


def test_missing_or_wrong_api_key_is_401_but_health_is_open(server, tiny_qwen2_dir):
    r = post(server, {"input_ids": [5, 6]}, headers={})
    assert r.status_code == 401 and r.json() == {"error": "Unauthorized"}
    assert post(server, {"input_ids": [5, 6]}, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert requests.get(server + "/health", timeout=10).status_code == 200
    info = requests.get(server + "/get_model_info", headers=AUTH, timeout=10).json()
    assert info["model_path"] == str(tiny_qwen2_dir)
    assert info["weight_version"] == "default"


def test_malformed_json_is_400_with_a_message(server):
    r = requests.post(server + "/generate", data=b'{"input_ids": [5, 6', headers=AUTH, timeout=10)
    assert r.status_code == 400
    assert "malformed JSON" in r.json()["error"]["message"] and "column" in r.json()["error"]["message"]
    r = post(server, {"input_ids": [5, 6], "sampling_params": {"temperature": -1}})
    assert r.status_code == 400 and "temperature" in r.json()["error"]["message"]
    r = post(server, {"input_ids": [5, 100000]})
    assert r.status_code == 400 and "100000" in r.json()["error"]["message"]
    r = post(server, {"sampling_params": {}})
    assert r.status_code == 400 and "input_ids" in r.json()["error"]["message"]


def test_single_prompt_greedy_matches_transformers(server, hf_model):
    prompt = [5, 6, 7, 8, 9]
    body = {"input_ids": prompt, "sampling_params": {"temperature": 0, "max_new_tokens": 10, "ignore_eos": True},
            "return_logprob": True}
    out = post(server, body).json()
    assert isinstance(out, dict)
    meta = out["meta_info"]
    assert out["output_ids"] == greedy_decode(hf_model, prompt, 10)
    assert meta["finish_reason"] == {"type": "length", "length": 10}
    assert meta["prompt_tokens"] == 5 and meta["completion_tokens"] == 10
    assert [x[1] for x in meta["output_token_logprobs"]] == out["output_ids"]
    ref = response_logprobs(hf_model, prompt, out["output_ids"])
    assert max(abs(x[0] - r) for x, r in zip(meta["output_token_logprobs"], ref)) < 1e-4
    assert post(server, body).json()["output_ids"] == out["output_ids"]  # greedy is deterministic


def test_batched_input_with_n_is_prompt_major(server, hf_model):
    prompts = [[5, 6, 7], [30], [40, 41, 42, 43, 44, 45, 46]]
    body = {"input_ids": prompts, "sampling_params": {"temperature": 0, "max_new_tokens": 6, "n": 2,
                                                      "ignore_eos": True}, "return_logprob": True}
    out = post(server, body).json()
    assert isinstance(out, list) and len(out) == 6
    for k, res in enumerate(out):
        prompt = prompts[k // 2]
        assert res["meta_info"]["prompt_tokens"] == len(prompt)
        # left padding in a batch must not change a prompt's greedy continuation
        assert res["output_ids"] == greedy_decode(hf_model, prompt, 6)


def test_sampled_logprobs_are_of_the_temperature_scaled_distribution(server, hf_model):
    prompt = [11, 12, 13]
    body = {"input_ids": prompt, "return_logprob": True,
            "sampling_params": {"temperature": 0.7, "max_new_tokens": 8, "n": 3, "ignore_eos": True,
                                "top_k": 20, "top_p": 0.9}}
    out = post(server, body).json()
    assert len(out) == 3
    for res in out:
        lps = [x[0] for x in res["meta_info"]["output_token_logprobs"]]
        ref = response_logprobs(hf_model, prompt, res["output_ids"], temperature=0.7)
        assert max(abs(a - b) for a, b in zip(lps, ref)) < 1e-4
        assert all(lp <= 0 for lp in lps)
    seeded = {**body, "sampling_params": {**body["sampling_params"], "n": 1, "sampling_seed": 7}}
    assert post(server, seeded).json()["output_ids"] == post(server, seeded).json()["output_ids"]


def test_stop_token_ids_and_max_new_tokens(server, hf_model):
    prompt = [5, 6, 7, 8, 9]
    free = greedy_decode(hf_model, prompt, 10)
    stop = free[3]
    first = free.index(stop)
    out = post(server, {"input_ids": prompt, "sampling_params": {"temperature": 0, "max_new_tokens": 10,
                                                                 "stop_token_ids": [stop]}}).json()
    assert out["output_ids"] == free[: first + 1]  # the matched stop token is kept, as in SGLang
    assert out["meta_info"]["finish_reason"] == {"type": "stop", "matched": stop}
    out = post(server, {"input_ids": prompt, "sampling_params": {"temperature": 0, "max_new_tokens": 3,
                                                                 "ignore_eos": True}}).json()
    assert out["output_ids"] == free[:3] and out["meta_info"]["finish_reason"]["type"] == "length"


def test_control_endpoints_answer(server):
    assert requests.post(server + "/flush_cache", headers=AUTH, timeout=10).status_code == 200
    assert requests.post(server + "/abort_request", json={"rid": "nope"}, headers=AUTH, timeout=10).status_code == 200
    assert requests.get(server + "/get_weight_version", headers=AUTH, timeout=10).json() == {"weight_version": "default"}
    bucket = {"names": ["x"], "dtypes": ["float32"], "shapes": [[1]]}
    r = requests.post(server + "/update_weights_from_distributed", json=bucket, headers=AUTH, timeout=10)
    assert r.status_code == 400 and not r.json()["success"] and "begin_weight_update" in r.json()["message"]
    assert requests.post(server + "/end_weight_update", json={}, headers=AUTH, timeout=10).status_code == 400
    assert requests.post(server + "/begin_weight_update", json={}, headers=AUTH, timeout=10).json()["success"]
    r = requests.post(server + "/begin_weight_update", json={}, headers=AUTH, timeout=10)
    assert r.status_code == 400 and "already open" in r.json()["message"]
    r = requests.post(server + "/update_weights_from_distributed", json=bucket, headers=AUTH, timeout=10)
    assert r.status_code == 400 and not r.json()["success"] and "init_weights_update_group" in r.json()["message"]
    assert requests.post(server + "/end_weight_update", json={}, headers=AUTH, timeout=10).json()["success"]
