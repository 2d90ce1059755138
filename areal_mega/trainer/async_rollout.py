"""Asynchronous RL on the controller (`trainer.async_rollout: true`): the session's sampler feeds a
`RolloutStream`, so the servers generate the next batches while the trainer trains on this one.

Step t (1-based) trains on the stream's batch t - 1, which was submitted once the servers ran a
weight version >= t - 1 - trainer.max_staleness (the version counted from the run's start), so
no token is more than eta versions behind the policy it trains; max_staleness = 0 is the
synchronous loop, sample for sample. Each batch's prompts, seed and max_new_tokens are the ones
the synchronous loop uses for that step (`Session.rollout_request`).

Checkpoints: a batch's tag holds the sampler state right after its prompts were drawn; a
checkpoint after step t stores the state of batch t - 1, so a resumed run draws again exactly
the batches that were still in flight: no prompt is lost, none trains twice.
"""
from __future__ import annotations

import time

from areal_mega.rollout.manager import RolloutBatch
from areal_mega.rollout.stream import RolloutStream, StreamBatch


class AsyncRollout:
    """The controller's stream of rollout batches; `next(step)` returns what `Session._generate` does."""

    def __init__(self, session, max_new_tokens_of):
        self.session = session
        self.n = session.cfg.rollout.n_samples
        self.eta = session.cfg.trainer.max_staleness
        self.max_new_tokens_of = max_new_tokens_of
        first = session.step - 1  # built during step `session.step`, whose batch is the stream's first
        self.version_offset = session.weight_version - first  # stream batch k <-> step k + 1
        self.trained_sampler_state = session.sampler.state_dict()
        self.t0 = time.monotonic()
        self.stream = RolloutStream(session.client(), self.n, self.eta, self._pull,
                                    initial_version=first, first_batch=first).start()

    def _pull(self, k: int):
        """Stream thread: batch k = step k + 1's prompts and sampling request."""
        s = self.session
        indices = s.sampler.next_batch()
        step = k + 1
        prompts, params = s.rollout_request(indices, step, self.max_new_tokens_of(step))
        return prompts, params, {"indices": indices, "sampler": s.sampler.state_dict()}

    def next(self, step: int, timeout_s: float | None = None) -> tuple[RolloutBatch, list[int]]:
        """Step `step`'s batch (blocks until complete): (rollout, prompt indices); the rollout's
        metrics carry the asynchronous figures ("async/..." keys)."""
        t_wait = time.monotonic()
        batch = self.stream.get(step - 1, timeout_s=timeout_s)
        waited = time.monotonic() - t_wait
        self.trained_sampler_state = batch.tag["sampler"]
        rollout = to_rollout_batch(batch, self.n, self.version_offset)
        rollout.metrics.update(self._metrics(batch, waited))
        return rollout, batch.tag["indices"]

    def set_version(self, weight_version: int) -> None:
        """After a weight sync: the servers run `weight_version`."""
        self.stream.set_version(weight_version - self.version_offset)

    def close(self) -> None:
        self.stream.close()

    def _metrics(self, batch: StreamBatch, waited: float) -> dict:
        version = self.session.weight_version
        lags = [version - v for s in batch.samples for v in s.token_versions]
        wall = max(time.monotonic() - self.t0, 1e-9)
        return {
            "async/staleness_mean": sum(lags) / len(lags) if lags else 0.0,
            "async/staleness_max": float(max(lags)) if lags else 0.0,
            "async/buffer_batches": float(self.stream.occupancy()),
            "async/interrupted_samples": float(sum(s.interruptions > 0 for s in batch.samples)),
            "async/trainer_wait_s": waited,
            "async/trainer_wait_fraction": self.stream.wait_s["trainer"] / wall,
            "async/generation_idle_fraction": self.stream.wait_s["generation_idle"] / wall,
        }


def to_rollout_batch(batch: StreamBatch, n: int, version_offset: int = 0) -> RolloutBatch:
    """A stream batch as the synchronous loop's RolloutBatch; a sample's weight version is the
    oldest of its tokens' (what the staleness check must see; an empty response has the version
    its batch was submitted at, `submitted_version + version_offset`)."""
    out = RolloutBatch()
    for j, s in enumerate(batch.samples):
        out.prompt_index.append(j // n)
        out.prompt_ids.append(list(s.prompt_ids))
        out.response_ids.append(list(s.response_ids))
        out.rollout_logprobs.append(list(s.logprobs))
        out.finish_reasons.append(s.finish_reason)
        oldest = min(s.token_versions) if s.token_versions else batch.submitted_version + version_offset
        out.weight_versions.append(str(oldest))
    wall = batch.done_time - batch.submit_time
    tokens = sum(out.response_lengths)
    out.metrics = {"num_samples": len(out), "gen_tokens": tokens, "gen_tokens_per_s": tokens / max(wall, 1e-9),
                   "num_aborted": out.finish_reasons.count("abort"), "wall_s": wall}
    return out
