"""vLLM's HTTP protocol (0.32): requests and responses, no I/O.

Read from vLLM's source: `entrypoints/scale_out/token_in_token_out/` (protocol.py,
api_router.py) and `entrypoints/rl/online/api_router.py`.

Generation: POST /inference/v1/generate `{"token_ids", "sampling_params":
{temperature, top_p, top_k, max_tokens, stop_token_ids, ignore_eos, n, seed,
logprobs: 0}}` -> `{"choices": [{"index", "token_ids", "finish_reason",
"logprobs": {"content": [{"token_id", "logprob"}]}, "weight_versions":
[{"version", "start", "end"}]}]}`. Token ids include a matched stop token.
logprobs 0 = the sampled token's only; the server runs with
`--logprobs-mode processed_logprobs`, so it is the log-probability under the
temperature-scaled distribution, which the trainer reproduces.
`weight_versions` are spans over the output tokens; a sample whose tokens
span several versions (only possible with pause mode "keep") reports the
oldest, so the trainer's staleness check stays conservative.

Weight updates (routes present with VLLM_SERVER_DEV_MODE=1):
/pause?mode=abort|keep, /init_weight_transfer_engine {"init_info"},
/start_weight_update, /update_weights {"update_info": {names, dtype_names,
shapes}} per bucket, /finish_weight_update {"weight_version"} (weights and
version change together, before generation resumes), /reset_prefix_cache,
/resume; the version is read from /weight_info. The init and update infos are
those of areal_mega.rollout.vllm_transfer (our engine, registered as "areal").
A sync that failed part-way leaves the update open (started, never
finished); the client closes it (`close_update`) when the next pause or group
shutdown is refused.
"""
from __future__ import annotations

from areal_mega.rollout.protocol import Call, Sample

# SGLang-named sampling parameters -> vLLM SamplingParams fields; others pass through unchanged
RENAMED = {"max_new_tokens": "max_tokens", "sampling_seed": "seed", "min_new_tokens": "min_tokens"}
# weight_sync.pause_mode -> vLLM PauseMode: "abort" ends running requests (they are sent again),
# "keep" freezes them until /resume (SGLang's retract / in_place keep requests too)
PAUSE_MODES = {"abort": "abort", "retract": "keep", "in_place": "keep"}


def sampling_params(params: dict, return_logprob: bool = True) -> dict:
    """vLLM SamplingParams fields for SGLang-named `params` (top_k -1 = off is vLLM's 0)."""
    out = {RENAMED.get(k, k): v for k, v in params.items() if v is not None}
    if out.get("top_k") == -1:
        out["top_k"] = 0
    if return_logprob:
        out["logprobs"] = 0
    return out


class VLLMProtocol:
    name = "vllm"

    def generate(self, input_ids: list[int], params: dict, return_logprob: bool = True) -> Call:
        return Call("/inference/v1/generate", {"token_ids": list(input_ids),
                                               "sampling_params": sampling_params(params, return_logprob)})

    def parse_generate(self, body) -> list[Sample]:
        if not isinstance(body, dict) or "choices" not in body:
            raise ValueError(f"vLLM /inference/v1/generate answer has no choices: {str(body)[:200]}")
        return [self._sample(c) for c in sorted(body["choices"], key=lambda c: c["index"])]

    @staticmethod
    def _sample(choice: dict) -> Sample:
        ids = [int(t) for t in choice.get("token_ids") or []]
        content = (choice.get("logprobs") or {}).get("content")
        if content is None:
            if ids:
                raise ValueError("vLLM answer has no logprobs.content (sampling_params.logprobs was not honoured)")
            content = []
        if [int(c["token_id"]) for c in content] != ids:
            raise ValueError("vLLM answer: token_ids and logprobs.content disagree")
        spans = choice.get("weight_versions") or []
        return Sample(ids, [float(c["logprob"]) for c in content], choice.get("finish_reason") or "abort",
                      str(spans[0]["version"]) if spans else "")

    def pause(self, mode: str) -> Call:
        if mode not in PAUSE_MODES:
            raise ValueError(f"pause mode {mode!r}: vLLM takes {sorted(PAUSE_MODES)}")
        return Call("/pause", query={"mode": PAUSE_MODES[mode]})

    def resume(self) -> Call:
        return Call("/resume")

    def flush_cache(self) -> Call:
        return Call("/reset_prefix_cache")

    def init_group(self, master_address: str, master_port: int, rank_offset: int, world_size: int,
                   group_name: str, backend: str) -> Call:
        return Call("/init_weight_transfer_engine", {"init_info": {
            "master_address": master_address, "master_port": master_port, "rank_offset": rank_offset,
            "world_size": world_size, "group_name": group_name, "backend": backend}})

    def destroy_group(self, group_name: str) -> Call:
        return Call("/shutdown_weight_transfer_engine")

    def start_update(self) -> Call:
        return Call("/start_weight_update")

    def update_bucket(self, names: list[str], dtypes: list[str], shapes: list[list[int]], group_name: str,
                      weight_version: str | None, flush_cache: bool = True, load_format: str | None = None) -> Call:
        info = {"names": names, "dtype_names": dtypes, "shapes": shapes}
        if load_format is not None:
            info["load_format"] = load_format  # read by our "areal" engine (vllm_transfer.py)
        return Call("/update_weights", {"update_info": info})

    def finish_update(self, weight_version: str) -> Call:
        return Call("/finish_weight_update", {"weight_version": weight_version})

    def close_update(self) -> Call:
        """Close an update a failed sync left open (vLLM refuses /start_weight_update and
        /shutdown_weight_transfer_engine while one is): what arrived is finalised, the version stays,
        the server stays paused until the next whole update. Answers an error when none is open."""
        return Call("/finish_weight_update", {})

    def set_version(self, version: str) -> Call:
        return Call("/update_weight_version", {"new_version": version})

    def version_calls(self) -> list[Call]:
        return [Call("/weight_info", method="GET")]

    def parse_version(self, body: dict) -> str:
        return str(body["weight_version"])

    def succeeded(self, body) -> bool:
        return True  # vLLM answers errors with a non-200 status
