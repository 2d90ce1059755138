"""SGLang's HTTP protocol (v0.5.23; also the reference server's): requests and responses, no I/O.

Generation: POST /generate `{"input_ids", "sampling_params", "return_logprob"}`
-> one object (n = 1) or a list of n, each `{"output_ids", "meta_info":
{"finish_reason": {"type"}, "weight_version", "output_token_logprobs":
[[logprob, token_id, text]]}}`. Weight updates: /pause_generation {mode},
/init_weights_update_group, /begin_weight_update, /update_weights_from_distributed
per bucket (the last one carries weight_version, so weights and version change
together), /end_weight_update, /flush_cache, /continue_generation. 0.5.23's
scheduler refuses /update_weights_from_distributed outside a begin/end session
(`scheduler_components/weight_updater.py`), and refuses to begin while one is
open, which is how a sync that failed part-way shows; the version is read from
/get_weight_version (<= 0.5.2) or /model_info (0.5.23).
"""
from __future__ import annotations

from areal_mega.rollout.protocol import Call, Sample


class SGLangProtocol:
    name = "sglang"

    def generate(self, input_ids: list[int], params: dict, return_logprob: bool = True) -> Call:
        return Call("/generate", {"input_ids": list(input_ids), "sampling_params": params,
                                  "return_logprob": return_logprob})

    def generate_batch(self, prompts: list[list[int]], params: list[dict], return_logprob: bool = True) -> Call:
        """One /generate for many prompts, one sampling_params object each; answered as a list in order."""
        return Call("/generate", {"input_ids": [list(p) for p in prompts], "sampling_params": list(params),
                                  "return_logprob": return_logprob})

    def parse_generate(self, body) -> list[Sample]:
        return [self._sample(r) for r in (body if isinstance(body, list) else [body])]

    @staticmethod
    def _sample(result: dict) -> Sample:
        meta = result["meta_info"]
        lps = meta.get("output_token_logprobs")
        if lps is None:
            raise ValueError("server response has no meta_info.output_token_logprobs (return_logprob was not honoured)")
        ids = [int(x[1]) for x in lps]
        if "output_ids" in result and list(result["output_ids"]) != ids:
            raise ValueError("server response: output_ids and output_token_logprobs disagree")
        reason = meta.get("finish_reason") or {"type": "abort"}
        return Sample(ids, [float(x[0]) for x in lps], reason["type"], str(meta.get("weight_version")))

    def pause(self, mode: str) -> Call:
        """mode: "abort" (running requests end as abort), "retract" or "in_place" (they wait)."""
        return Call("/pause_generation", {"mode": mode})

    def resume(self) -> Call:
        return Call("/continue_generation", {})

    def flush_cache(self) -> Call:
        return Call("/flush_cache")

    def init_group(self, master_address: str, master_port: int, rank_offset: int, world_size: int,
                   group_name: str, backend: str) -> Call:
        return Call("/init_weights_update_group", {
            "master_address": master_address, "master_port": master_port, "rank_offset": rank_offset,
            "world_size": world_size, "group_name": group_name, "backend": backend})

    def destroy_group(self, group_name: str) -> Call:
        return Call("/destroy_weights_update_group", {"group_name": group_name})

    def start_update(self) -> Call:
        return Call("/begin_weight_update", {})

    def update_bucket(self, names: list[str], dtypes: list[str], shapes: list[list[int]], group_name: str,
                      weight_version: str | None, flush_cache: bool = True, load_format: str | None = None) -> Call:
        payload = {"names": names, "dtypes": dtypes, "shapes": shapes, "group_name": group_name,
                   "flush_cache": flush_cache}
        if weight_version is not None:
            payload["weight_version"] = weight_version
        if load_format is not None:
            payload["load_format"] = load_format
        return Call("/update_weights_from_distributed", payload)

    def finish_update(self, weight_version: str) -> Call:
        return Call("/end_weight_update", {})  # the version rode on the last bucket

    def close_update(self) -> Call:
        """Close the session a sync failing part-way left open (SGLang then refuses /begin_weight_update)."""
        return Call("/end_weight_update", {})

    def set_version(self, version: str) -> Call:
        return Call("/update_weight_version", {"new_version": version, "abort_all_requests": False})

    def version_calls(self) -> list[Call]:
        """Tried in order; a 404 moves to the next."""
        return [Call("/get_weight_version", method="GET"), Call("/model_info", method="GET")]

    def parse_version(self, body: dict) -> str:
        return str(body["weight_version"])

    def succeeded(self, body) -> bool:
        """Whether a 200 answer to a weight-update call reports success."""
        return isinstance(body, dict) and bool(body.get("success", False))
