"""The run config: every module's section composed, plus the trainer's own."""
from __future__ import annotations

import dataclasses

from areal_mega.algo.config import AlgoConfig
from areal_mega.cluster import ClusterConfig, plan_placement
from areal_mega.data.config import DataConfig
from areal_mega.engine.config import EngineConfig
from areal_mega.metrics import WandbConfig
from areal_mega.reward.config import RewardConfig
from areal_mega.rollout.config import RolloutConfig
from areal_mega.weight_sync.config import WeightSyncConfig


@dataclasses.dataclass
class StageConfig:
    """One stage of iterative context lengthening (AReaL v0.1: 8K -> 16K -> 24K)."""

    max_new_tokens: int = 8192
    steps: int = 100

    def __post_init__(self):
        if self.max_new_tokens < 1 or self.steps < 0:
            raise ValueError("trainer.stages[*]: max_new_tokens must be >= 1 and steps >= 0")


@dataclasses.dataclass
class TrainerConfig:
    """The loop: mode, stages, checkpoints, evaluation, staleness."""

    mode: str = "rl"  # rl | sft
    run_dir: str = "outputs/run"
    stages: list[StageConfig] = dataclasses.field(default_factory=lambda: [StageConfig()])
    ref_model: bool = True  # keep a frozen reference for the KL term (skipped when kl_coef == 0)
    save_every: int = 0  # steps between checkpoints; 0 = only at the end (and on SIGTERM)
    resume: bool = True  # continue from run_dir/checkpoints when one exists
    keep_last: int = 2
    export_hf: bool = True  # HF directory at the end of training (run_dir/hf)
    eval_every: int = 0  # steps between held-out evaluations; 0 = only before and after
    eval_samples: int = 200  # held-out problems, one answer each
    eval_temperature: float = 0.0  # 0: greedy; else sampled at this temperature (seeded, same seeds every eval)
    eval_k: int = 1  # samples per held-out problem when sampled: accuracy = Pass@1 averaged over k (+ greedy)
    max_staleness: int = 0  # weight versions a sample may lag behind the trainer
    # asynchronous RL: the servers generate the next batches while the trainer trains; no token trains
    # on a policy more than max_staleness versions newer than the one that sampled it (0 = synchronous)
    async_rollout: bool = False
    # SFT only: the fraction of targets whose answer is off by one (a near miss) (a noisy teacher;
    # the quickstart's warm start, whose samples are then right ~(1 - noise) of the time, for RL to correct)
    sft_label_noise: float = 0.0
    log_every: int = 1  # steps between console lines (metrics.jsonl gets every step)
    # rollout and training apart (slime's --debug-rollout-only / --debug-train-only):
    dump_rollouts: bool = False  # save each step's rollout to run_dir/rollouts/step_N.json (+ .answers.json)
    rollout_only: bool = False  # generate and score, never train or sync (the servers keep their weights)
    replay_rollouts: str = ""  # a dump folder: step N trains on its step_N files; no servers are started

    def __post_init__(self):
        if self.mode not in ("rl", "sft"):
            raise ValueError(f"trainer.mode must be rl or sft, got '{self.mode}'")
        if not self.stages:
            raise ValueError("trainer.stages must list at least one stage")
        if self.log_every < 1:
            raise ValueError(f"trainer.log_every must be >= 1, got {self.log_every}")
        if self.eval_k < 1:
            raise ValueError(f"trainer.eval_k must be >= 1, got {self.eval_k}")
        for name in ("save_every", "eval_every", "max_staleness", "eval_samples"):
            if getattr(self, name) < 0:
                raise ValueError(f"trainer.{name} must be >= 0")
        if self.eval_temperature < 0:
            raise ValueError("trainer.eval_temperature must be >= 0 (0 = greedy)")
        if not 0.0 <= self.sft_label_noise < 1.0:
            raise ValueError(f"trainer.sft_label_noise must be in [0, 1), got {self.sft_label_noise}")
        if self.keep_last < 1:
            raise ValueError("trainer.keep_last must be >= 1")
        if (self.rollout_only or self.replay_rollouts) and self.mode != "rl":
            raise ValueError("trainer.rollout_only and trainer.replay_rollouts need trainer.mode=rl")
        if self.rollout_only and self.replay_rollouts:
            raise ValueError("trainer.rollout_only and trainer.replay_rollouts exclude each other")
        if self.async_rollout and (self.mode != "rl" or self.rollout_only or self.replay_rollouts):
            raise ValueError("trainer.async_rollout needs trainer.mode=rl with live generation and training "
                             "(not rollout_only or replay_rollouts)")


def stage_of(cfg: "RunConfig", step: int) -> StageConfig:
    """The context-lengthening stage that global step `step` (1-based) belongs to."""
    end = 0
    for stage in cfg.trainer.stages:
        end += stage.steps
        if step <= end:
            return stage
    return cfg.trainer.stages[-1]


@dataclasses.dataclass
class RunConfig:
    """Everything `python -m areal_mega.train --config FILE` reads."""

    engine: EngineConfig = dataclasses.field(default_factory=EngineConfig)
    rollout: RolloutConfig = dataclasses.field(default_factory=RolloutConfig)
    weight_sync: WeightSyncConfig = dataclasses.field(default_factory=WeightSyncConfig)
    reward: RewardConfig = dataclasses.field(default_factory=RewardConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    algo: AlgoConfig = dataclasses.field(default_factory=AlgoConfig)
    wandb: WandbConfig = dataclasses.field(default_factory=WandbConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    cluster: ClusterConfig = dataclasses.field(default_factory=ClusterConfig)

    def __post_init__(self):
        if not self.engine.model_path:
            raise ValueError("engine.model_path must name a HF model directory")
        # the layout must be possible before anything starts (raises PlacementError naming the keys)
        plan = plan_placement(self.cluster, self.rollout.tp_size, self.engine.parallel.tp, self.engine.parallel.pp)
        if plan.servers and not self.rollout.urls and self.rollout.num_servers != len(plan.servers):
            raise ValueError(f"rollout.num_servers={self.rollout.num_servers} but the cluster section plans "
                             f"{len(plan.servers)} servers of rollout.tp_size={self.rollout.tp_size} GPUs")
        if self.rollout.backend == "vllm" and self.weight_sync.pause_mode == "none":
            raise ValueError("weight_sync.pause_mode=none with rollout.backend=vllm: vLLM opens a weight update "
                             "at the pause (/pause, then /start_weight_update); use abort or in_place")
