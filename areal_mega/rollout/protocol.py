"""What every generation backend's HTTP protocol is reduced to: `Call`s out, `Sample`s back.

`GenerationClient` does the I/O (balancing, retries, time-outs) and never
knows a route or a field name; one protocol object per backend does, without
I/O, so it is tested without servers:

- `protocol_sglang.SGLangProtocol`: SGLang v0.5.23 (`/generate`,
  `/pause_generation`, `/update_weights_from_distributed`, ...), also spoken
  by the reference server;
- `protocol_vllm.VLLMProtocol`: vLLM 0.32 (`/inference/v1/generate`, `/pause`,
  `/update_weights`, ... of its RL API).

Each protocol object has the same methods: `generate(input_ids, params,
return_logprob) -> Call`, `parse_generate(body) -> list[Sample]`, and one
`Call` builder per control-plane step (pause, resume, flush_cache,
init_group, destroy_group, start_update, update_bucket, finish_update,
close_update, set_version, version_calls / parse_version); a builder that
returns None has nothing to do on that backend. SGLang's protocol also has
`generate_batch(prompts, params_list, return_logprob) -> Call` (many prompts
in one /generate), which the client uses for the reference server. Sampling parameters come in SGLang's names
(temperature, top_p, top_k, max_new_tokens, stop_token_ids, ignore_eos, n,
sampling_seed); each protocol translates them.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Call:
    """One HTTP request: method, path, JSON body, query parameters."""

    path: str
    payload: dict | None = None
    method: str = "POST"
    query: dict = field(default_factory=dict)


@dataclass
class Sample:
    """One generated sample, whatever the backend.

    output_ids `[L]` (the matched stop token included), output_logprobs `[L]`
    (log-probability of each sampled token under the server's sampling
    distribution, temperature applied), finish_reason "stop" / "length" /
    "abort", weight_version: the version of the weights that generated it.
    """

    output_ids: list[int]
    output_logprobs: list[float]
    finish_reason: str
    weight_version: str


def error_message(body) -> str:
    """The message of an error body: {"error": {"message"}}, {"error": str}, FastAPI's {"detail"}, or text."""
    if isinstance(body, dict):
        err = body.get("error", body.get("message", body.get("detail", body)))
        return err.get("message", str(err)) if isinstance(err, dict) else str(err)
    return str(body)


def protocol_for(backend: str):
    """The protocol object of `backend` ("sglang" / "reference" speak SGLang's, "vllm" vLLM's)."""
    from areal_mega.rollout.protocol_sglang import SGLangProtocol
    from areal_mega.rollout.protocol_vllm import VLLMProtocol

    if backend in ("sglang", "reference"):
        return SGLangProtocol()
    if backend == "vllm":
        return VLLMProtocol()
    raise ValueError(f"backend: unknown generation backend {backend!r} (reference, sglang or vllm)")
