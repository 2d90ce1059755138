"""What one training run holds, and the phases of one RL step.

Every rank builds a `Session`; global rank 0 (the controller) also owns the
generation servers, the reward pool, the sampler and the metrics logger.
Methods that only the controller computes return None elsewhere; methods that
run the engine are called by every rank together.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist

from areal_mega.algo.advantages import compute_advantages
from areal_mega.algo.filters import apply_overlong, dynamic_sampling_mask
from areal_mega.algo.loss import MinibatchRatioCap, loss_normalizers, policy_loss
from areal_mega.algo.mismatch import logprob_mismatch
from areal_mega.cluster import trainer_server_gpus
from areal_mega.config import save_config, to_dict
from areal_mega.data import ResumableSampler, build_prompts, load_records, synthetic_split
from areal_mega.data.synthetic import off_by_one
from areal_mega.engine.checkpoint import load_checkpoint, save_checkpoint
from areal_mega.engine.engine import Engine
from areal_mega.metrics import MetricsLogger
from areal_mega.models.tiny import load_tokenizer
from areal_mega.platform import init_distributed, seed_everything
from areal_mega.reward import RewardPool
from areal_mega.reward.extract import continue_think
from areal_mega.rollout import GenerationClient, generate, launch_servers
from areal_mega.trainer.batch import (
    check_staleness,
    drop_empty,
    load_step_rollout,
    save_step_rollout,
    select,
    seq_batch,
)
from areal_mega.trainer.config import RunConfig, stage_of
from areal_mega.weight_sync import StageLayout, StageWeightSync


class Session:
    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.rank, self.world = init_distributed()
        seed_everything(cfg.engine.seed)
        self.is_controller = self.rank == 0
        self.run_dir = Path(cfg.trainer.run_dir)
        self.policy = Engine(cfg.engine, trainable=True)
        use_ref = cfg.trainer.mode == "rl" and cfg.trainer.ref_model and cfg.algo.kl_coef > 0
        self.ref = Engine(cfg.engine, trainable=False) if use_ref else None
        self.tokenizer = load_tokenizer(cfg.engine.model_path)
        self.weight_version = 0
        self.step = 0
        self.servers = self.weights = self.pool = self.logger = self.stream = None
        self._loop = self._gen_client = None  # the controller's rollout/evaluation event loop and client, kept
        self.urls: list[str] = []
        self.ckpt_root = self.run_dir / "checkpoints"
        resumed = load_checkpoint(self.policy, self.ckpt_root) if cfg.trainer.resume else None
        self.resumed = resumed is not None
        if resumed:
            self.step = resumed["step"]
        if self.is_controller:
            self._start_controller()
            if resumed:
                self.sampler.load_state_dict(resumed["sampler"])
        self._join_weight_sync()  # all ranks; the others wait here while the controller starts servers
        if resumed:  # servers start from engine.model_path: give them the checkpoint's weights
            self.weight_version = resumed["weight_version"] - 1
            self.sync_weights()
        self._sigterm = False
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame) -> None:
        self._sigterm = True

    def stop_requested(self) -> bool:
        """True on every rank once any rank got SIGTERM (ranks agree, so all save the same step)."""
        flag = torch.tensor([1.0 if self._sigterm else 0.0])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.policy.object_group)
        return bool(flag.item())

    def save(self) -> None:
        """All ranks: a resumable checkpoint of this step (model, optimizer, RNG, sampler, versions)."""
        extra = {"step": self.step, "weight_version": self.weight_version,
                 "sampler": self._sampler_state() if self.is_controller else None}
        save_checkpoint(self.policy, self.ckpt_root, self.step, extra, keep_last=self.cfg.trainer.keep_last)

    def _sampler_state(self) -> dict:
        """The sampler as of the last trained step (in asynchronous mode it has drawn batches still in
        flight, which a resumed run must draw again)."""
        return self.stream.trained_sampler_state if self.stream is not None else self.sampler.state_dict()

    # ------------------------------------------------------------ set-up
    def _start_controller(self) -> None:
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.run_dir / "config.yaml")
        records = load_records(cfg.data)
        self.prompts = build_prompts(records, self.tokenizer, cfg.data.template, cfg.data.max_prompt_tokens)
        self.sampler = ResumableSampler(len(self.prompts.records), cfg.data.batch_size, seed=cfg.data.seed)
        heldout = synthetic_split(cfg.data.seed, cfg.data.synthetic_low, cfg.data.synthetic_high,
                                  cfg.data.synthetic_heldout)[1] if cfg.data.path == "synthetic" else []
        self.heldout = build_prompts(heldout[: cfg.trainer.eval_samples], self.tokenizer, cfg.data.template,
                                     cfg.data.max_prompt_tokens)
        self.logger = MetricsLogger(self.run_dir, cfg.wandb, config=to_dict(cfg),
                                    resume_step=self.step if self.resumed else None)
        self.pool = RewardPool(cfg.reward)
        if not cfg.trainer.replay_rollouts and (cfg.trainer.mode == "rl" or self.heldout.records):
            self._start_servers()

    def _start_servers(self) -> None:
        rc = self.cfg.rollout
        urls = list(rc.urls)
        if not urls:
            gpu_ids = None  # on GPU: GPUs torchrun did not give to ranks (cluster.generation_gpus), or a refusal
            if torch.cuda.is_available():
                gpus = trainer_server_gpus(self.cfg.cluster, rc.num_servers, rc.tp_size,
                                           int(os.environ.get("LOCAL_WORLD_SIZE", "1")), torch.cuda.device_count())
                gpu_ids = [g[0] for g in gpus]
            self.servers = launch_servers(self.cfg.engine.model_path, rc.num_servers, backend=rc.backend,
                                          host=rc.host, api_key=rc.api_key, tp_size=rc.tp_size,
                                          mem_fraction=rc.mem_fraction, log_dir=self.run_dir / "server_logs",
                                          gpu_ids=gpu_ids, num_threads=rc.server_threads)
            urls = self.servers.urls
        self.urls = urls
        down = [u for u, ok in zip(urls, self._health(retries=rc.max_retries)) if not ok]
        if down:
            raise RuntimeError(f"generation servers not answering /health after {rc.max_retries + 1} tries: {down}")

    def _health(self, retries: int = 0) -> list[bool]:
        """Each server's /health, retried with a back-off while any is down."""
        async def probe():
            client = self.client()
            try:
                return await client.check_health(force=True)
            finally:
                await client.close()

        for attempt in range(retries + 1):
            healthy = asyncio.run(probe())
            if all(healthy) or attempt == retries:
                return healthy
            time.sleep(min(2.0**attempt, 10.0))
        return healthy

    def _join_weight_sync(self) -> None:
        """All ranks: each pipeline stage's sender joins the servers' weight-update group of its stage."""
        t = self.policy.topo
        layout = StageLayout(t.pp_rank, t.pp_size, t.is_sync_rank, t.dp_rank == 0, self.policy.object_group)
        rc = self.cfg.rollout
        self.weights = StageWeightSync(layout, self.cfg.weight_sync, rc.tp_size, rc.api_key, rc.backend)
        self.weights.join(self.urls if self.is_controller else None)

    def _generate_on_servers(self, prompts: list[list[int]], n: int, params: dict):
        """Controller: `rollout.generate` on one event loop and client kept for the run (rebuilt when the
        servers change), so each rollout reuses the last one's connections to the servers."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        if self._gen_client is not None and self._gen_client.urls != [u.rstrip("/") for u in self.urls]:
            self._loop.run_until_complete(self._gen_client.close())
            self._gen_client = None
        if self._gen_client is None:
            self._gen_client = self.client()
        return self._loop.run_until_complete(generate(self._gen_client, prompts, n, params, quiet=False))

    def client(self) -> GenerationClient:
        rc = self.cfg.rollout
        return GenerationClient(self.urls, api_key=rc.api_key, backend=rc.backend, timeout_s=rc.timeout_s,
                                max_retries=rc.max_retries,
                                max_concurrency=rc.max_concurrency_per_server * len(self.urls),
                                health_interval_s=rc.health_interval_s)

    # ------------------------------------------------------------ RL phases
    def rollout(self, max_new_tokens: int):
        """Controller: sample prompts and generate n each. Returns (rollout, gold answer per sample).

        With trainer.replay_rollouts the step's saved rollout is read instead (off-policy by
        construction, so staleness is not checked); with trainer.dump_rollouts it is saved.
        """
        if not self.is_controller:
            return None, None
        tc = self.cfg.trainer
        if tc.replay_rollouts:
            return load_step_rollout(tc.replay_rollouts, self.step)
        rollout, answers = self._stream_next() if tc.async_rollout else self._generate(max_new_tokens)
        if tc.dump_rollouts:
            save_step_rollout(self.run_dir / "rollouts", self.step, rollout, answers)
        return rollout, answers

    def rollout_request(self, indices: list[int], step: int, max_new_tokens: int) -> tuple[list[list[int]], dict]:
        """Step `step`'s prompts (token ids) and sampling parameters, seeded by the step."""
        seed = (self.cfg.engine.seed * 1_000_003 + step * 65_537) % 2**31
        params = {**self.cfg.rollout.sampling_params(), "max_new_tokens": max_new_tokens,
                  "stop_token_ids": [self.tokenizer.eos_token_id], "sampling_seed": seed}
        return [self.prompts.input_ids[i] for i in indices], params

    def _generate(self, max_new_tokens: int):
        indices = self.sampler.next_batch()
        prompts, params = self.rollout_request(indices, self.step, max_new_tokens)
        rollout = drop_empty(self._generate_on_servers(prompts, self.cfg.rollout.n_samples, params))
        check_staleness(rollout, self.weight_version, self.cfg.trainer.max_staleness)
        return rollout, [self.prompts.records[indices[p]].answer for p in rollout.prompt_index]

    def _stream_next(self):
        """Asynchronous mode: this step's batch from the rollout stream (started on the first call)."""
        from areal_mega.trainer.async_rollout import AsyncRollout

        if self.stream is None:
            self.stream = AsyncRollout(self, lambda step: stage_of(self.cfg, step).max_new_tokens)
        rc = self.cfg.rollout  # a batch waits at most as long as its slowest request with every retry
        rollout, indices = self.stream.next(self.step, timeout_s=rc.timeout_s * (rc.max_retries + 2))
        rollout = drop_empty(rollout)
        check_staleness(rollout, self.weight_version, self.cfg.trainer.max_staleness)
        return rollout, [self.prompts.records[indices[p]].answer for p in rollout.prompt_index]

    def score(self, rollout, golds):
        """Controller: task rewards `[num_samples]` (correct / wrong value) and correctness (0/1)."""
        if not self.is_controller:
            return None, None
        texts = self.tokenizer.batch_decode(rollout.response_ids, skip_special_tokens=True)
        if self.prompts.opens_think:  # the prompt opened the reasoning: an unfinished one commits to nothing
            texts = continue_think(texts)
        before = self.pool.stats["disagreements"]
        correct = self.pool.correct(texts, golds)
        if self.cfg.reward.checker == "both":  # this step's share of responses the two checkers judged differently
            rollout.metrics["reward/checker_disagreement"] = (self.pool.stats["disagreements"] - before) / max(1, len(texts))
        algo = self.cfg.algo
        rewards = torch.tensor([algo.reward_correct if c else algo.reward_wrong for c in correct])
        return rewards, torch.tensor(correct, dtype=torch.float32)

    def prepare(self, rollout, rewards):
        """Controller: dynamic sampling + over-long policy. Returns (rollout, rewards `[num_samples]`,
        loss mask `[num_tokens]` float32 over the flat response tokens)."""
        algo = self.cfg.algo
        group_ids = torch.tensor(rollout.prompt_index)
        if algo.dynamic_sampling:
            keep = dynamic_sampling_mask(rewards, group_ids).nonzero().flatten().tolist()
            if keep:
                rollout, rewards = select(rollout, keep), rewards[keep]
        truncated = torch.tensor([f == "length" for f in rollout.finish_reasons])
        rewards, keep = apply_overlong(rewards, torch.ones(len(rollout), 1), truncated, algo.overlong, algo.reward_wrong)
        lengths = torch.tensor([len(r) for r in rollout.response_ids])
        return rollout, rewards, torch.repeat_interleave(keep[:, 0], lengths)  # flat [num_tokens] loss mask

    def logprobs(self, rollout):
        """All ranks: (recomputed old log-probs, reference log-probs), flat `[num_tokens]` on the controller,
        each None where not needed (and None on the other ranks).

        The policy forward runs only with algo.old_logprobs=recompute; with "rollout" the train/rollout
        mismatch is taken from the first training forward of the step instead (`train`), so a step runs
        one policy forward per micro-batch, plus the reference model's when the KL term is on.
        """
        recompute = self.cfg.algo.old_logprobs == "recompute"
        if not recompute and self.ref is None:
            return None, None
        batch = seq_batch(rollout) if self.is_controller else None
        temperature = self.cfg.rollout.temperature or 1.0

        def flat(engine):
            out = engine.forward(batch, temperature=temperature)
            return torch.cat(out["logprobs"]) if out is not None else None

        return flat(self.policy) if recompute else None, flat(self.ref) if self.ref else None

    def advantages(self, rollout, rewards, mask, old_lp, ref_lp):
        """Controller: KL-in-reward, gamma = lambda = 1 returns, normalisation -> SeqBatch for training.

        Per-token data stays flat (`[num_tokens]`, the responses concatenated); old_lp: the recomputed
        old log-probs, None to use the rollout's."""
        algo = self.cfg.algo
        lengths = torch.tensor([len(r) for r in rollout.response_ids])
        rollout_lp = torch.tensor([x for lp in rollout.rollout_logprobs for x in lp], dtype=torch.float32)
        old = old_lp if old_lp is not None else rollout_lp
        adv, stats = compute_advantages(algo, rewards, mask, lengths, old_logprobs=old, ref_logprobs=ref_lp,
                                        group_ids=torch.tensor(rollout.prompt_index))
        split = lengths.tolist()
        fields = {"advantages": adv.split(split), "old_logprobs": old.split(split), "loss_mask": mask.float().split(split)}
        if ref_lp is not None and not algo.kl_in_reward:
            fields["ref_logprobs"] = ref_lp.split(split)
        if algo.objective == "decoupled":  # old = proximal (recomputed); the rollout's are the behaviour policy's
            fields["behav_logprobs"] = rollout_lp.split(split)
        if old_lp is not None:  # the forward that recomputed them is the mismatch's trainer side
            stats.update(logprob_mismatch(old_lp, rollout_lp, mask))
        return seq_batch(rollout, {k: list(v) for k, v in fields.items()}), {k: float(v) for k, v in stats.items()}

    def train(self, batch) -> dict:
        """All ranks: PPO minibatch updates over the batch (minibatches x epochs optimizer steps).

        Returns (the last update's stats, the train/rollout mismatch): with algo.old_logprobs=rollout the
        controller's `logprob_mismatch` of the first minibatch's forward, before any update ({} otherwise)."""
        algo = self.cfg.algo
        temperature = self.cfg.rollout.temperature or 1.0
        norm = {}  # the current minibatch's (tokens, sequences) in the loss: masked-out ones do not count
        cap = MinibatchRatioCap(algo.max_ratio_cap if algo.max_ratio_cap is not None else float("inf"),
                                self.policy.object_group)

        def loss_fn(logprobs, entropy, fields, mb, global_num_tokens, global_num_seqs):
            loss, stats = policy_loss(
                logprobs, fields["old_logprobs"], fields["advantages"], fields["loss_mask"], algo,
                ref_logprobs=fields.get("ref_logprobs"), num_global_tokens=norm["tokens"],
                num_global_seqs=norm["seqs"], seq_lens=mb.response_lens, backend=self.cfg.engine.logprob_backend,
                behav_logprobs=fields.get("behav_logprobs"),
            )
            return loss, {**stats, "entropy": entropy.mean()}

        # with old log-probs from the rollout, the first update's forward (weights not yet moved) gives the
        # train/rollout mismatch: no separate policy forward per step
        from_rollout = algo.old_logprobs == "rollout"
        stats, mismatch = {}, {}
        for epoch in range(algo.ppo_epochs):
            for i, (part, (norm["tokens"], norm["seqs"])) in enumerate(self._minibatch_parts(batch, algo.ppo_minibatches)):
                first = epoch == 0 and i == 0
                stats = self.policy.train_step(part, loss_fn, temperature=temperature,
                                               return_logprobs=first and from_rollout, grad_gate=cap)
                stats.update(ratio_cap_triggered=float(cap.triggered), minibatch_ratio_mean=cap.mean)
                if "logprobs" in stats:  # the controller's, of the first minibatch (the whole batch with one)
                    fields = part.token_fields
                    mismatch = logprob_mismatch(stats.pop("logprobs"), torch.cat(fields["old_logprobs"]),
                                                torch.cat(fields["loss_mask"]))
                if stats["skipped"] and self.is_controller:
                    print(f"[areal_mega] step {self.step}: non-finite loss or gradient, update skipped", flush=True)
        return stats, mismatch

    def _minibatch_parts(self, batch, n: int) -> list:
        """All ranks: the step's minibatches as (SeqBatch slice on the controller, None elsewhere; the
        minibatch's `loss_normalizers`); only the normalizers are broadcast, the engine sends each DP rank
        its share."""
        parts = norms = None
        if self.is_controller:
            size = -(-len(batch) // n)
            parts = [batch.select(list(range(i, min(i + size, len(batch))))) for i in range(0, len(batch), size)]
            norms = [loss_normalizers(p.token_fields["loss_mask"]) for p in parts]
        box = [norms]
        dist.broadcast_object_list(box, src=0, group=self.policy.object_group)
        return list(zip(parts if parts is not None else [None] * len(box[0]), box[0]))

    def sync_weights(self) -> dict:
        """All ranks: each stage's sender streams its stage to every server (weight_sync/stages.py);
        bump the weight version. A server found dead leaves the pool first."""
        self.weight_version += 1
        dtype = torch.float32 if self.policy.dtype == torch.float32 else torch.bfloat16
        named = ((n, t.to(dtype)) for n, t in self.policy.hf_weights())
        out = self.weights.sync(named if self.weights.layout.gathers else None, str(self.weight_version))
        if self.stream is not None:
            self.stream.set_version(self.weight_version)
        if not out:
            return {}
        self.urls = self.weights.urls
        lost = {k: v for k, v in out.items() if k.startswith("rollout/")}
        return {"sync/seconds": out["seconds"], "sync/gb_per_s": out["gb_per_s"], **lost}

    def evaluate(self) -> dict:
        """Controller: accuracy on the held-out problems (the quickstart's measure); {} without servers.

        Greedy when trainer.eval_temperature is 0; else Pass@1 averaged over trainer.eval_k samples per
        problem at that temperature (the same seeds every time), plus the greedy accuracy.
        """
        if not self.is_controller or not self.heldout.records or not self.urls:
            return {}
        tc = self.cfg.trainer
        golds = [r.answer for r in self.heldout.records]

        def accuracy(temperature: float, k: int) -> float:
            params = {"temperature": temperature, "max_new_tokens": 32,
                      "stop_token_ids": [self.tokenizer.eos_token_id], "sampling_seed": self.cfg.engine.seed}
            out = self._generate_on_servers(self.heldout.input_ids, k, params)
            texts = self.tokenizer.batch_decode(out.response_ids, skip_special_tokens=True)
            correct = self.pool.correct(texts, [golds[i] for i in out.prompt_index])
            return sum(correct) / len(correct)

        n = len(golds)
        if tc.eval_temperature == 0:
            return {"eval/accuracy": accuracy(0.0, 1), "eval/metric": f"greedy accuracy on {n} held-out problems"}
        return {"eval/accuracy": accuracy(tc.eval_temperature, tc.eval_k), "eval/accuracy_greedy": accuracy(0.0, 1),
                "eval/metric": f"Pass@1 averaged over k={tc.eval_k} samples at T={tc.eval_temperature:g} "
                               f"on {n} held-out problems"}

    def write_summary(self, wall_seconds: float) -> None:
        """Controller: run_dir/summary.json with held-out accuracy before and after training (and greedy)."""
        if not self.is_controller:
            return
        from areal_mega.metrics import read_metrics

        rows = [r for r in read_metrics(self.logger.path) if r.get("eval/accuracy") is not None]
        summary = {"accuracy_before": rows[0]["eval/accuracy"] if rows else None,
                   "accuracy_after": rows[-1]["eval/accuracy"] if rows else None,
                   "metric": rows[-1].get("eval/metric") if rows else None,
                   "steps": self.step, "wall_seconds": wall_seconds}
        if rows and rows[-1].get("eval/accuracy_greedy") is not None:
            summary.update(greedy_before=rows[0].get("eval/accuracy_greedy"),
                           greedy_after=rows[-1]["eval/accuracy_greedy"])
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        print(json.dumps(summary), flush=True)

    def log(self, metrics: dict) -> None:
        if self.is_controller:
            self.logger.log(self.step, metrics)

    def close(self) -> None:
        if self.weights is not None:
            self.weights.close()
        if self._loop is not None:
            if self._gen_client is not None:
                self._loop.run_until_complete(self._gen_client.close())
            self._loop.close()
        if self.is_controller:
            if self.stream is not None:
                self.stream.close()
            self.logger.close()
            self.pool.close()
            if self.servers is not None:
                self.servers.stop()


def timed(times: dict, name: str, fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    times[f"time/{name}"] = time.perf_counter() - t0
    return out


def sft_batch(session: Session):
    """Controller: a batch of prompts with their gold answers as ` \\boxed{answer}` + EOS; with
    trainer.sft_label_noise = p, each answer is off by one (`off_by_one`) with probability p."""
    if not session.is_controller:
        return None
    from areal_mega.engine.packing import SeqBatch

    tok = session.tokenizer
    noise = session.cfg.trainer.sft_label_noise
    rng = random.Random(f"sft_label_noise:{session.cfg.data.seed}:{session.step}")  # same draws on resume
    ids, prompt_lens = [], []
    for i in session.sampler.next_batch():
        prompt = session.prompts.input_ids[i]
        gold = session.prompts.records[i].answer
        if noise and rng.random() < noise:
            gold = off_by_one(gold, rng)
        answer = tok(f" \\boxed{{{gold}}}", add_special_tokens=False)["input_ids"]
        ids.append(prompt + answer + [tok.eos_token_id])
        prompt_lens.append(len(prompt))
    return SeqBatch(ids, prompt_lens)
