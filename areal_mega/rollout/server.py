"""Reference generation server speaking the subset of SGLang's HTTP protocol areal-mega uses.

`python -m areal_mega.rollout.server --model HF_DIR [--host 127.0.0.1] --port P [--api-key K]`

Matched against SGLang v0.5.23 (`srt/entrypoints/http_server.py`,
`srt/managers/io_struct.py`, `srt/managers/tokenizer_manager.py`):
- `/generate` takes `input_ids` (one prompt `[int]` or a batch `[[int]]`) or
  `text`, `sampling_params` (one object or one per prompt; `n` samples each),
  `return_logprob`, `return_text_in_logprobs`, `rid`. One prompt with n = 1
  answers one object; otherwise a list, prompt-major (prompt i's n samples
  consecutive), as SGLang expands batch x parallel samples. Each object is
  `{"text", "output_ids", "meta_info": {"id", "finish_reason", "prompt_tokens",
  "completion_tokens", "cached_tokens", "weight_version", "e2e_latency",
  "output_token_logprobs"}}`, `finish_reason` being `{"type": "stop",
  "matched": id}`, `{"type": "length", "length": n}` or `{"type": "abort",
  "message": ...}` and `output_token_logprobs` `[[logprob, token_id, text]]`
  (text None unless `return_text_in_logprobs`). Output ids include the
  matched stop token, as SGLang's do.
- Errors are `{"error": {"message": ...}}` with status 400; with `--api-key`
  every path except `/health*` needs `Authorization: Bearer K`, else 401
  `{"error": "Unauthorized"}`.
- Control endpoints answer `{"success", "message"}` (weight updates) or
  SGLang's plain bodies. `/update_weights_from_distributed` is refused (400,
  success false) outside a `/begin_weight_update` ... `/end_weight_update`
  session, as is a second begin while one is open, as SGLang 0.5.23's
  scheduler does. `/get_weight_version` (`{"weight_version"}`) is the endpoint
  of SGLang 0.4.x-0.5.2; v0.5.23 reports the version in `/model_info`. Both
  are served.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time

from aiohttp import web

from areal_mega.rollout.flat_bucket import LOAD_FORMAT
from areal_mega.rollout.reference_engine import ReferenceEngine, validate_sampling

SGLANG_VERSION = "0.5.23"
ENGINE = web.AppKey("engine", ReferenceEngine)


def _error(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": {"message": message}}, status=status)


async def _json_body(request: web.Request, required: tuple[str, ...] = ()) -> dict:
    """Parse the body as a JSON object; raise a 400 naming the problem (position, missing field)."""
    raw = await request.read()
    try:
        body = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as e:
        raise web.HTTPBadRequest(text=json.dumps({"error": {"message": f"malformed JSON body: {e}"}}),
                                 content_type="application/json") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text=json.dumps({"error": {"message": "JSON body must be an object"}}),
                                 content_type="application/json")
    missing = [k for k in required if k not in body]
    if missing:
        raise web.HTTPBadRequest(text=json.dumps({"error": {"message": f"missing field(s) {missing}"}}),
                                 content_type="application/json")
    return body


def _auth_middleware(api_key: str | None):
    @web.middleware
    async def check(request: web.Request, handler):
        if api_key and not request.path.startswith("/health"):
            if request.headers.get("Authorization") != f"Bearer {api_key}":
                return web.json_response({"error": "Unauthorized"}, status=401)
        return await handler(request)

    return check


async def health(request: web.Request) -> web.Response:
    return web.Response(status=200)


async def model_info(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    cfg = engine.model.config
    return web.json_response({
        "model_path": engine.model_dir,
        "tokenizer_path": engine.model_dir,
        "is_generation": True,
        "weight_version": engine.weight_version,
        "model_type": cfg.model_type,
        "architectures": cfg.architectures,
        "sglang_protocol_version": SGLANG_VERSION,
    })


async def get_weight_version(request: web.Request) -> web.Response:
    return web.json_response({"weight_version": request.app[ENGINE].weight_version})


def _prompts(engine: ReferenceEngine, body: dict) -> tuple[list[list[int]], bool]:
    """The prompts as token ids and whether the request was a single prompt."""
    if "input_ids" in body:
        ids = body["input_ids"]
        if isinstance(ids, list) and ids and all(isinstance(p, list) for p in ids):
            return ids, False
        if isinstance(ids, list) and all(isinstance(t, int) for t in ids):
            return [ids], True
        raise ValueError("input_ids must be a list of token ids or a list of such lists")
    if "text" in body:
        text = body["text"]
        texts, single = ([text], True) if isinstance(text, str) else (text, False)
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise ValueError("text must be a string or a list of strings")
        return [engine.tokenizer.encode(t, add_special_tokens=False) for t in texts], single
    raise ValueError("missing field: one of input_ids or text is required")


async def generate(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    body = await _json_body(request)
    try:
        prompts, single = _prompts(engine, body)
        sp = body.get("sampling_params")
        sps = sp if isinstance(sp, list) else [sp] * len(prompts)
        if len(sps) != len(prompts):
            raise ValueError(f"sampling_params: {len(sps)} entries for {len(prompts)} prompts")
        params = [validate_sampling(p, engine.vocab_size) for p in sps]
        n = params[0]["n"]
        if any(p["n"] != n for p in params):
            raise ValueError("sampling_params.n must be the same for every prompt")
        base_rid = body.get("rid")
        samples = engine.submit_many([(prompt, p) for prompt, p in zip(prompts, params) for _ in range(n)])
    except ValueError as e:
        return _error(str(e))
    if isinstance(base_rid, str) and len(samples) == 1:
        samples[0].rid = base_rid
    elif isinstance(base_rid, list) and len(base_rid) == len(samples):
        for s, r in zip(samples, base_rid):
            s.rid = str(r)
    want_lp = bool(body.get("return_logprob", False))
    want_text = bool(body.get("return_text_in_logprobs", False))
    results = await asyncio.gather(*(asyncio.wrap_future(s.future) for s in samples), return_exceptions=True)
    out = []
    for s, r in zip(samples, results):
        if isinstance(r, Exception):
            return _error(f"generation failed: {r}", status=500)
        meta = {
            "id": s.rid,
            "finish_reason": r["finish_reason"],
            "prompt_tokens": len(s.input_ids),
            "weight_version": r["weight_version"],
            "completion_tokens": len(r["output_ids"]),
            "cached_tokens": 0,
            "e2e_latency": time.monotonic() - s.created,
        }
        if want_lp:
            texts = ([engine.tokenizer.decode([t]) for t in r["output_ids"]] if want_text
                     else [None] * len(r["output_ids"]))
            meta["output_token_logprobs"] = [list(x) for x in zip(r["logprobs"], r["output_ids"], texts)]
        text = engine.tokenizer.decode(r["output_ids"], skip_special_tokens=True)
        out.append({"text": text, "output_ids": r["output_ids"], "meta_info": meta})
    return web.json_response(out[0] if single and n == 1 else out)


async def flush_cache(request: web.Request) -> web.Response:
    # No prefix cache to flush: every batch builds its own KV cache.
    return web.Response(text="Cache flushed.\nPlease check backend logs for more details. "
                             "(When there are running or waiting requests, the operation will not be performed.)\n")


async def abort_request(request: web.Request) -> web.Response:
    body = await _json_body(request)
    request.app[ENGINE].abort(rid=str(body.get("rid", "")), abort_all=bool(body.get("abort_all", False)))
    return web.Response(status=200)


async def pause_generation(request: web.Request) -> web.Response:
    body = await _json_body(request)
    try:
        request.app[ENGINE].pause(body.get("mode", "abort"))
    except ValueError as e:
        return _error(str(e))
    return web.json_response({"message": "Generation paused successfully.", "status": "ok"})


async def continue_generation(request: web.Request) -> web.Response:
    request.app[ENGINE].resume()
    return web.json_response({"message": "Generation continued successfully.", "status": "ok"})


async def _control(func, *args) -> web.Response:
    """Run a blocking engine call in a thread; answer SGLang's {"success", "message"}."""
    try:
        await asyncio.get_running_loop().run_in_executor(None, func, *args)
    except Exception as e:  # reported to the caller, like SGLang's weight updater
        return web.json_response({"success": False, "message": f"{type(e).__name__}: {e}"}, status=400)
    return web.json_response({"success": True, "message": "Succeeded."})


async def init_weights_update_group(request: web.Request) -> web.Response:
    b = await _json_body(request, ("master_address", "master_port", "rank_offset", "world_size"))
    engine = request.app[ENGINE]
    return await _control(engine.init_group, b["master_address"], int(b["master_port"]), int(b["rank_offset"]),
                          int(b["world_size"]), b.get("group_name", "weight_update_group"), b.get("backend", "nccl"))


async def destroy_weights_update_group(request: web.Request) -> web.Response:
    b = await _json_body(request)
    return await _control(request.app[ENGINE].destroy_group, b.get("group_name", "weight_update_group"))


def _refused(message: str) -> web.Response:
    return web.json_response({"success": False, "message": message}, status=400)


async def begin_weight_update(request: web.Request) -> web.Response:
    """Open the weight-update session (SGLang 0.5.23: one at a time)."""
    await _json_body(request)
    engine = request.app[ENGINE]
    if engine.update_open:
        return _refused("a weight-update session is already open; call end_weight_update() first")
    engine.update_open = True
    return web.json_response({"success": True, "message": "Success"})


async def end_weight_update(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    if not engine.update_open:
        return _refused("no weight-update session is open; call begin_weight_update() first")
    engine.update_open = False
    return web.json_response({"success": True, "message": "Success"})


async def update_weights_from_distributed(request: web.Request) -> web.Response:
    b = await _json_body(request, ("names", "dtypes", "shapes"))
    engine = request.app[ENGINE]
    if not engine.update_open:
        return _refused("update_weights_from_distributed must run between begin_weight_update() and "
                        "end_weight_update()")
    if b.get("load_format") not in (None, "auto", LOAD_FORMAT):
        return _error(f"load_format: {b['load_format']!r} is not supported by the reference server "
                      f"(none or {LOAD_FORMAT!r})")
    if b.get("abort_all_requests", False):
        engine.abort(abort_all=True)
    return await _control(engine.update_from_distributed, b["names"], b["dtypes"], b["shapes"],
                          b.get("group_name", "weight_update_group"), b.get("weight_version"),
                          b.get("load_format") == LOAD_FORMAT)


async def update_weight_version(request: web.Request) -> web.Response:
    b = await _json_body(request, ("new_version",))
    engine = request.app[ENGINE]
    if b.get("abort_all_requests", True):
        engine.abort(abort_all=True)
    engine.weight_version = str(b["new_version"])
    return web.json_response({"success": True, "message": f"Weight version updated to {b['new_version']}",
                              "new_version": b["new_version"]})


def build_app(model_dir: str, api_key: str | None = None, max_running: int = 256, seed: int = 0) -> web.Application:
    app = web.Application(middlewares=[_auth_middleware(api_key)], client_max_size=64 * 2**20)
    app[ENGINE] = ReferenceEngine(model_dir, max_running=max_running, seed=seed)
    app.router.add_get("/health", health)
    app.router.add_get("/health_generate", health)
    app.router.add_get("/get_model_info", model_info)
    app.router.add_get("/model_info", model_info)
    app.router.add_get("/get_weight_version", get_weight_version)
    app.router.add_route("POST", "/generate", generate)
    app.router.add_route("PUT", "/generate", generate)
    app.router.add_route("*", "/flush_cache", flush_cache)
    app.router.add_post("/abort_request", abort_request)
    app.router.add_post("/pause_generation", pause_generation)
    app.router.add_post("/continue_generation", continue_generation)
    app.router.add_post("/init_weights_update_group", init_weights_update_group)
    app.router.add_post("/destroy_weights_update_group", destroy_weights_update_group)
    app.router.add_post("/begin_weight_update", begin_weight_update)
    app.router.add_post("/end_weight_update", end_weight_update)
    app.router.add_post("/update_weights_from_distributed", update_weights_from_distributed)
    app.router.add_post("/update_weight_version", update_weight_version)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", "--model-path", dest="model", required=True, help="HF checkpoint directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=30000)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--max-running-requests", type=int, default=256,
                        help="most samples decoded in one batch (the client's default bound on requests in flight)")
    parser.add_argument("--num-threads", type=int, default=0,
                        help="torch intra-op threads (0: torch's default, i.e. OMP_NUM_THREADS or all cores)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampler for requests without sampling_seed")
    args = parser.parse_args(argv)
    if args.num_threads < 0:
        parser.error(f"--num-threads must be >= 0, got {args.num_threads}")
    if args.num_threads:
        import torch

        torch.set_num_threads(args.num_threads)
    app = build_app(args.model, api_key=args.api_key, max_running=args.max_running_requests, seed=args.seed)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
