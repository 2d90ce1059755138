"""Controller-side batch building: rollouts -> the engine's SeqBatch; rollout dumps for replay.

Per-token data stays flat: the algorithm works on `[num_tokens]` float32
tensors (the responses concatenated) with per-sample lengths; a SeqBatch
field holds per-sequence views into them.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from areal_mega.engine.packing import SeqBatch
from areal_mega.rollout.manager import RolloutBatch


def seq_batch(rollout: RolloutBatch, token_fields: dict[str, list[torch.Tensor]] | None = None) -> SeqBatch:
    """The engine's view of a rollout: prompt + response ids, fields per response token."""
    return SeqBatch(
        input_ids=[p + r for p, r in zip(rollout.prompt_ids, rollout.response_ids)],
        prompt_lens=[len(p) for p in rollout.prompt_ids],
        token_fields=token_fields or {},
    )


def drop_empty(rollout: RolloutBatch) -> RolloutBatch:
    """Samples with at least one response token (an empty response has nothing to train)."""
    keep = [i for i, r in enumerate(rollout.response_ids) if r]
    return select(rollout, keep)


def select(rollout: RolloutBatch, keep: list[int]) -> RolloutBatch:
    return RolloutBatch(
        prompt_index=[rollout.prompt_index[i] for i in keep],
        prompt_ids=[rollout.prompt_ids[i] for i in keep],
        response_ids=[rollout.response_ids[i] for i in keep],
        rollout_logprobs=[rollout.rollout_logprobs[i] for i in keep],
        finish_reasons=[rollout.finish_reasons[i] for i in keep],
        weight_versions=[rollout.weight_versions[i] for i in keep],
        metrics=rollout.metrics,
    )


def check_staleness(rollout: RolloutBatch, weight_version: int, max_staleness: int) -> None:
    """Refuse samples generated more than `max_staleness` versions ago (DESIGN.md §6)."""
    for v in rollout.weight_versions:
        version = int(v) if str(v).isdigit() else 0
        if weight_version - version > max_staleness:
            raise RuntimeError(
                f"sample generated with weight version {v}, trainer is at {weight_version}: "
                f"older than trainer.max_staleness={max_staleness}"
            )


def _step_files(directory: str | Path, step: int) -> tuple[Path, Path]:
    base = Path(directory) / f"step_{step:06d}"
    return base.with_suffix(".json"), base.with_suffix(".answers.json")


def save_step_rollout(directory: str | Path, step: int, rollout: RolloutBatch, answers: list[str]) -> Path:
    """Write step `step`'s rollout (`step_N.json`, RolloutBatch.save) and its gold answer per
    sample (`step_N.answers.json`) into `directory`, so training can replay it without servers."""
    batch_file, answers_file = _step_files(directory, step)
    batch_file.parent.mkdir(parents=True, exist_ok=True)
    rollout.save(batch_file)
    answers_file.write_text(json.dumps(answers))
    return batch_file


def load_step_rollout(directory: str | Path, step: int) -> tuple[RolloutBatch, list[str]]:
    """(rollout, gold answer per sample) written by `save_step_rollout`; errors name the file."""
    batch_file, answers_file = _step_files(directory, step)
    for f in (batch_file, answers_file):
        if not f.is_file():
            raise FileNotFoundError(f"trainer.replay_rollouts: {f} not found (the dump has no step {step})")
    rollout = RolloutBatch.load(batch_file)
    answers = json.loads(answers_file.read_text())
    if not isinstance(answers, list) or len(answers) != len(rollout):
        raise ValueError(f"{answers_file}: expected a list of {len(rollout)} answers, one per sample")
    return rollout, [str(a) for a in answers]
