"""The training step logs how often the two checkers disagree (reward.checker=both)."""
from types import SimpleNamespace

import pytest

from areal_mega.reward import RewardConfig, RewardPool
from areal_mega.reward.mathverify import available
from areal_mega.rollout.manager import RolloutBatch
from areal_mega.train import rollout_metrics
from areal_mega.trainer.session import Session


class _Tokenizer:
    """Token ids are indexes into a fixed list of response texts."""

    def __init__(self, texts):
        self.texts = texts

    def batch_decode(self, ids, skip_special_tokens=True):
        return [self.texts[row[0]] for row in ids]


def _session(pool, texts, checker):
    s = Session.__new__(Session)  # only what score() reads: no engine, no servers
    s.is_controller, s.pool, s.tokenizer = True, pool, _Tokenizer(texts)
    s.prompts = SimpleNamespace(opens_think=False)  # a template that closes its think block (or has none)
    s.cfg = SimpleNamespace(reward=SimpleNamespace(checker=checker), algo=SimpleNamespace(reward_correct=5.0, reward_wrong=-5.0))
    return s


def _rollout(n):
    return RolloutBatch(prompt_index=list(range(n)), prompt_ids=[[0]] * n, response_ids=[[i] for i in range(n)],
                        rollout_logprobs=[[0.0]] * n, finish_reasons=["stop"] * n, weight_versions=[0] * n)


@pytest.mark.skipif(not available(), reason="math-verify not installed (pip install -e .[math-verify])")
def test_step_metrics_carry_the_disagreement_rate():
    # ours yes / math-verify no on the inequality; both yes on 7; both no on 8 vs 9; so 1 of 4 differs
    texts = ["so \\boxed{x > 2}", "so \\boxed{7}", "so \\boxed{8}", "so \\boxed{x > 2}"]
    golds = ["(2,\\infty)", "7", "9", "(3,\\infty)"]
    with RewardPool(RewardConfig(num_workers=1, checker="both", timeout_s=30.0)) as pool:
        s = _session(pool, texts, "both")
        rollout = _rollout(4)
        rewards, correct = s.score(rollout, golds)
        assert correct.tolist() == [1.0, 1.0, 0.0, 0.0]
        metrics = rollout_metrics(rollout, rewards, correct)
        assert metrics["reward/checker_disagreement"] == pytest.approx(0.25)
        rollout = _rollout(2)  # the next step counts only its own responses, where both checkers say no
        rewards, correct = s.score(rollout, ["7", "9"])
        assert rollout_metrics(rollout, rewards, correct)["reward/checker_disagreement"] == 0.0
        assert pool.disagreement_rate() == pytest.approx(1 / 6)  # the pool's own figure is cumulative


def test_builtin_checker_logs_no_disagreement():
    with RewardPool(RewardConfig(num_workers=1, timeout_s=30.0)) as pool:
        rollout = _rollout(1)
        rewards, correct = _session(pool, ["\\boxed{7}"], "builtin").score(rollout, ["7"])
        assert "reward/checker_disagreement" not in rollout_metrics(rollout, rewards, correct)
