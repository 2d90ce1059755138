"""The reference server's engine: batched generation with a KV cache on transformers (fp32, CPU).

One scheduler thread takes every waiting sample (up to `max_running`) into a
static batch, prefills each distinct prompt once (left-padded; the n samples
of a prompt share its cache rows), and decodes step by step, dropping each
row from the batch when it finishes (Qwen2 checkpoints run the static-cache
forward of rollout/qwen2_decoder.py, others transformers' with a
`DynamicCache`); samples
that arrive meanwhile wait for the next batch. A sample with `sampling_seed`
draws from its own generator, so its tokens and logprobs do not depend on the
batch it lands in; the others draw from the server's generator (`--seed`).
Weight updates take the same model lock, so a batch never sees two
weight versions, and each response names the version it was generated with.

Logprobs (what SGLang v0.5.23 returns by default, `layers/sampler.py`): at
temperature 0 the log-softmax of the raw logits; otherwise the log-softmax of
`logits / temperature`, taken before top-k / top-p truncation (SGLang computes
`log(probs)` of the temperature-scaled softmax before its top-k/top-p
sampling kernels). At temperature 1 that is the raw model distribution.
"""
from __future__ import annotations

import inspect
import queue
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import torch

from areal_mega.platform.process_group import join_group, leave_group
from areal_mega.rollout import flat_bucket
from areal_mega.rollout.qwen2_decoder import Qwen2Decoder

# SGLang's SamplingParams defaults (srt/sampling/sampling_params.py, v0.5.23).
DEFAULT_SAMPLING = dict(
    max_new_tokens=128, temperature=1.0, top_p=1.0, top_k=-1, stop_token_ids=None, ignore_eos=False, n=1
)
IGNORED_SAMPLING = {"skip_special_tokens", "spaces_between_special_tokens", "no_stop_trim", "min_p"}


@dataclass
class Sample:
    """One sample to generate: prompt `[prompt_len]` token ids and its validated sampling params."""

    input_ids: list[int]
    params: dict
    rid: str = field(default_factory=lambda: uuid.uuid4().hex)
    future: Future = field(default_factory=Future)
    aborted: bool = False
    created: float = field(default_factory=time.monotonic)


def validate_sampling(params, vocab_size: int) -> dict:
    """SGLang sampling params (dict) -> dict with defaults; ValueError names the bad field."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ValueError(f"sampling_params must be an object, got {type(params).__name__}")
    unknown = set(params) - set(DEFAULT_SAMPLING) - IGNORED_SAMPLING - {"sampling_seed", "stop"}
    if unknown:
        raise ValueError(f"sampling_params: unsupported field(s) {sorted(unknown)} in the reference server")
    if params.get("stop"):
        raise ValueError("sampling_params.stop: stop strings are not supported by the reference server; use stop_token_ids")
    p = {**DEFAULT_SAMPLING, **{k: v for k, v in params.items() if k in DEFAULT_SAMPLING or k == "sampling_seed"}}
    checks = {
        "max_new_tokens": isinstance(p["max_new_tokens"], int) and p["max_new_tokens"] >= 0,
        "temperature": isinstance(p["temperature"], (int, float)) and p["temperature"] >= 0,
        "top_p": isinstance(p["top_p"], (int, float)) and 0 < p["top_p"] <= 1,
        "top_k": isinstance(p["top_k"], int) and (p["top_k"] == -1 or p["top_k"] >= 1),
        "n": isinstance(p["n"], int) and p["n"] >= 1,
        "ignore_eos": isinstance(p["ignore_eos"], bool),
        "stop_token_ids": p["stop_token_ids"] is None
        or (isinstance(p["stop_token_ids"], list) and all(isinstance(t, int) for t in p["stop_token_ids"])),
        "sampling_seed": not isinstance(p.get("sampling_seed"), bool)
        and isinstance(p.get("sampling_seed", 0), int),
    }
    for name, ok in checks.items():
        if not ok:
            raise ValueError(f"sampling_params.{name}: invalid value {p.get(name)!r}")
    p["stop_token_ids"] = set(p["stop_token_ids"] or [])
    return p


def _filter_top_k_top_p(probs: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Zero the probabilities outside each row's top-k and top-p nucleus. probs `[B, V]` float32."""
    sorted_p, order = probs.sort(dim=-1, descending=True)
    rank = torch.arange(probs.shape[-1]).unsqueeze(0)
    k = torch.where(top_k > 0, top_k, probs.shape[-1]).unsqueeze(1)
    keep = (rank < k) & ((sorted_p.cumsum(-1) - sorted_p) < top_p.unsqueeze(1))
    return torch.zeros_like(probs).scatter(-1, order, sorted_p * keep)


class ReferenceEngine:
    """Holds the HF model, its weight version, the waiting queue and the scheduler thread."""

    def __init__(self, model_dir: str, max_running: int = 256, seed: int = 0, batch_window_s: float = 0.02):
        from transformers import AutoModelForCausalLM

        from areal_mega.models.tiny import load_tokenizer

        if not (Path(model_dir) / "config.json").is_file():
            raise ValueError(f"model: {model_dir} has no config.json (not a HF checkpoint directory)")
        self.model_dir = str(model_dir)
        self.tokenizer = load_tokenizer(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32).eval()
        self.vocab_size = self.model.config.vocab_size
        eos = self.model.config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self.pad_id = self.model.config.pad_token_id or 0
        self.max_running = max_running
        self.batch_window_s = batch_window_s
        # transformers >= 5.2x renames `past_key_values` to `cache`.
        params = inspect.signature(self.model.forward).parameters
        self.cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self.decoder = Qwen2Decoder.of(self.model)  # Qwen2: the static-cache forward; else transformers'
        self.weight_version = "default"  # SGLang's ServerArgs.weight_version default
        self.update_open = False  # a /begin_weight_update ... /end_weight_update session is open (server.py)
        self.model_lock = threading.Lock()
        self.waiting: queue.Queue[list[Sample]] = queue.Queue()  # one item per request: its samples
        self.carried: list[Sample] = []  # taken from `waiting` beyond max_running: the next batch's first
        self.running: list[Sample] = []
        self.resumed = threading.Event()
        self.resumed.set()
        self.abort_all_running = False
        self.groups: dict[str, object] = {}
        self.generator = torch.Generator().manual_seed(seed)
        threading.Thread(target=self._loop, daemon=True, name="scheduler").start()

    def submit(self, input_ids: list[int], params: dict) -> Sample:
        return self.submit_many([(input_ids, params)])[0]

    def submit_many(self, requests: list[tuple[list[int], dict]]) -> list[Sample]:
        """Queue (prompt ids, validated params) pairs together: they land in the same batch when it has room.
        Nothing is queued unless every prompt is valid."""
        for input_ids, _ in requests:
            if not input_ids:
                raise ValueError("input_ids: empty prompt")
            bad = [t for t in input_ids
                   if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < self.vocab_size]
            if bad:
                raise ValueError(f"input_ids: token id {bad[0]!r} outside the vocabulary [0, {self.vocab_size})")
        samples = [Sample(list(input_ids), params) for input_ids, params in requests]
        self.waiting.put(samples)
        return samples

    def abort(self, rid: str = "", abort_all: bool = False) -> None:
        """Finish the matching running/waiting samples with finish_reason abort."""
        queued = [s for request in list(self.waiting.queue) for s in request]
        for s in list(self.running) + list(self.carried) + queued:
            if abort_all or s.rid == rid:
                s.aborted = True
        if abort_all:
            self.abort_all_running = True

    def _loop(self) -> None:
        while True:
            batch = self.carried or self.waiting.get()
            self.resumed.wait()
            # Requests of one rollout arrive a few ms apart: keep collecting while they do.
            deadline = time.monotonic() + self.batch_window_s
            while len(batch) < self.max_running:
                try:
                    batch = batch + self.waiting.get(timeout=max(0.0, min(0.002, deadline - time.monotonic())))
                except queue.Empty:
                    break
            batch, self.carried = batch[: self.max_running], batch[self.max_running:]
            with self.model_lock:
                self.abort_all_running = False
                self.running = batch
                try:
                    self._run_batch(batch)
                except Exception as e:  # a broken batch fails its requests, not the server
                    for s in batch:
                        if not s.future.done():
                            s.future.set_exception(e)
                self.running = []

    @torch.inference_mode()
    def _run_batch(self, batch: list[Sample]) -> None:
        """Decode `batch` to its end and set each sample's future.

        One prefill per distinct prompt: the n samples of a prompt share its
        KV-cache rows (copied after the prefill). A row that finishes (stop,
        length, abort) leaves the batch with its cache rows, so each step
        runs only the rows still decoding. A sample with `sampling_seed` has
        its own generator, so its tokens do not depend on the batch it runs in.
        """
        version = self.weight_version
        out_ids: list[list[int]] = [[] for _ in batch]
        out_lp: list[list[float]] = [[] for _ in batch]
        finish: list[dict | None] = [None] * len(batch)
        for i, s in enumerate(batch):
            if s.params["max_new_tokens"] == 0:
                finish[i] = {"type": "length", "length": 0}
        live = [i for i in range(len(batch)) if finish[i] is None]  # batch index of each decoding row
        if live:
            self._decode(batch, live, out_ids, out_lp, finish)
        for i, s in enumerate(batch):
            s.future.set_result(
                {"output_ids": out_ids[i], "logprobs": out_lp[i], "finish_reason": finish[i], "weight_version": version}
            )

    def _decode(self, batch, live, out_ids, out_lp, finish) -> None:
        """The decode loop of `_run_batch` over the rows `live` (indices into `batch`); fills the outputs."""
        from transformers import DynamicCache

        prompt_row: dict[tuple[int, ...], int] = {}
        rows = torch.tensor([prompt_row.setdefault(tuple(batch[i].input_ids), len(prompt_row)) for i in live])
        lens = [len(p) for p in prompt_row]
        L = max(lens)
        ids = torch.full((len(lens), L), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(lens), L), dtype=torch.long)
        for r, prompt in enumerate(prompt_row):
            ids[r, L - lens[r]:] = torch.tensor(prompt)
            mask[r, L - lens[r]:] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        max_new = max(batch[i].params["max_new_tokens"] for i in live)
        cache = self.decoder.new_cache(len(lens), L + max_new) if self.decoder is not None else DynamicCache()
        logits = self._forward(ids, mask, pos, cache)
        if len(lens) < len(live):  # copy each prompt's cache rows to its samples
            cache.batch_select_indices(rows)
            logits, mask, pos = logits[rows], mask[rows], pos[rows]
        pos = pos[:, -1:]
        params = [batch[i].params for i in live]
        temps = torch.tensor([float(p["temperature"]) for p in params])
        top_p = torch.tensor([float(p["top_p"]) for p in params])
        top_k = torch.tensor([p["top_k"] for p in params])
        gens = [torch.Generator().manual_seed(p["sampling_seed"]) if p.get("sampling_seed") is not None else None
                for p in params]
        max_pos = self.model.config.max_position_embeddings
        while True:
            greedy = temps == 0
            logp = torch.log_softmax(logits / torch.where(greedy, 1.0, temps).unsqueeze(1), dim=-1)
            probs = logp.exp()
            if bool(((top_k > 0) | (top_p < 1)).any()):
                probs = _filter_top_k_top_p(probs, top_k, top_p)
            next_tok = torch.where(greedy, logits.argmax(-1), self._draw(probs, gens))
            tok_lp = logp.gather(1, next_tok.unsqueeze(1)).squeeze(1)
            keep = []
            for j, (i, t, lp) in enumerate(zip(live, next_tok.tolist(), tok_lp.tolist())):
                s = batch[i]
                if s.aborted or self.abort_all_running:
                    finish[i] = {"type": "abort", "message": "Abort in waiting queue" if not out_ids[i] else "Abort"}
                    continue
                out_ids[i].append(t)
                out_lp[i].append(lp)
                if t in s.params["stop_token_ids"] or (not s.params["ignore_eos"] and t in self.eos_ids):
                    finish[i] = {"type": "stop", "matched": t}
                elif len(out_ids[i]) >= s.params["max_new_tokens"] or len(s.input_ids) + len(out_ids[i]) >= max_pos:
                    finish[i] = {"type": "length", "length": len(out_ids[i])}
                else:
                    keep.append(j)
            if not keep:
                return
            if len(keep) < len(live):  # finished rows leave the batch
                idx = torch.tensor(keep)
                cache.batch_select_indices(idx)
                mask, pos, next_tok, temps, top_p, top_k = (x[idx] for x in (mask, pos, next_tok, temps, top_p, top_k))
                live, gens = [live[j] for j in keep], [gens[j] for j in keep]
            mask = torch.cat([mask, torch.ones((len(live), 1), dtype=torch.long)], dim=1)
            pos = pos + 1
            logits = self._forward(next_tok.unsqueeze(1), mask, pos, cache)

    def _forward(self, ids, mask, pos, cache) -> torch.Tensor:
        """Next-token logits `[B, V]` float32 of ids `[B, T]` after the rows' cached tokens."""
        if self.decoder is not None:
            return self.decoder(ids, mask, pos, cache)
        return self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                          **{self.cache_kwarg: cache}).logits[:, -1, :].float()

    def _draw(self, probs: torch.Tensor, gens: list) -> torch.Tensor:
        """One token per row of probs `[B, V]`: argmax(probs / Exp(1) noise), what torch.multinomial(probs, 1)
        computes; a row's noise comes from its own generator, the others' from the server's."""
        if bool(torch.isnan(probs).any()):
            raise ValueError("the model's logits are not finite (nan probabilities)")
        noise = torch.empty_like(probs)
        if any(g is None for g in gens):
            noise.exponential_(generator=self.generator)
        for j, g in enumerate(gens):
            if g is not None:
                noise[j].exponential_(generator=g)
        return (probs / noise).argmax(-1)

    def pause(self, mode: str = "abort") -> None:
        """Stop starting batches; mode 'abort' also finishes the running batch now (SGLang's default)."""
        if mode not in ("abort", "retract", "in_place"):
            raise ValueError(f"mode: unknown pause mode {mode!r} (abort, retract, in_place)")
        self.resumed.clear()
        if mode == "abort":
            self.abort(abort_all=True)

    def resume(self) -> None:
        self.resumed.set()

    def init_group(self, master_address: str, master_port: int, rank_offset: int, world_size: int,
                   group_name: str, backend: str) -> None:
        """Join the trainer's weight-update group as rank `rank_offset` (tp_rank 0); blocks until all joined.

        Groups are kept by name, one per trainer pipeline stage (SGLang's
        `_model_update_group[group_name]`); joining a name again replaces that
        group, as SGLang does (a trainer restarted against running servers).
        """
        if group_name in self.groups:
            leave_group(self.groups.pop(group_name))
        self.groups[group_name] = join_group(master_address, master_port, rank_offset, world_size, group_name, backend)

    def destroy_group(self, group_name: str) -> None:
        if group_name not in self.groups:
            raise ValueError(f"group_name: the group to be destroyed does not exist ({group_name!r}; "
                             f"groups: {sorted(self.groups)})")
        leave_group(self.groups.pop(group_name))

    def update_from_distributed(self, names: list[str], dtypes: list[str], shapes: list[list[int]],
                                group_name: str, weight_version: str | None, flattened: bool = False) -> None:
        """Receive one bucket (one broadcast from rank 0 per tensor, in `names` order, or with `flattened`
        one of the whole bucket packed as rollout/flat_bucket.py says) and load it.

        Waits for the running batch to end (the model lock); every tensor is
        received before any is loaded, so an unknown name loads nothing.
        """
        if group_name not in self.groups:
            raise ValueError(f"group_name: group {group_name!r} not initialised; call /init_weights_update_group first")
        if not len(names) == len(dtypes) == len(shapes):
            raise ValueError("names, dtypes and shapes must have the same length")
        torch_dtypes = [getattr(torch, d.removeprefix("torch.")) for d in dtypes]
        state = self.model.state_dict()
        with self.model_lock:
            received = list(zip(names, flat_bucket.receive(self.groups[group_name], torch_dtypes, shapes,
                                                           flattened=flattened)))
            unknown = [n for n, _ in received if n not in state]
            if unknown:
                raise ValueError(f"names: unknown parameter(s) {unknown[:5]} for {type(self.model).__name__}")
            for name, t in received:
                if tuple(state[name].shape) != tuple(t.shape):
                    raise ValueError(f"{name}: shape {list(t.shape)} != model's {list(state[name].shape)}")
            for name, t in received:
                state[name].copy_(t)
            if weight_version is not None:
                self.weight_version = str(weight_version)
