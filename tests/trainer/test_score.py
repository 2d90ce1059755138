"""Session.score: the controller's task rewards from decoded responses, with the prompt's open think block."""
from types import SimpleNamespace

import torch

from areal_mega.algo.config import AlgoConfig
from areal_mega.reward import RewardConfig, RewardPool
from areal_mega.trainer.session import Session


class _Decode:
    def __init__(self, texts):
        self.texts = texts

    def batch_decode(self, ids, skip_special_tokens=True):
        return [self.texts[i[0]] for i in ids]


def test_score_puts_back_the_think_tag_the_prompt_opened():
    texts = ["so 42.\n</think>\nThe answer is \\boxed{42}", "try \\boxed{42} then check", "\\boxed{41}"]
    rollout = SimpleNamespace(response_ids=[[0], [1], [2]], metrics={})
    cfg = SimpleNamespace(algo=AlgoConfig(), reward=RewardConfig(num_workers=1))
    with RewardPool(cfg.reward) as pool:
        def score(opens):
            fake = SimpleNamespace(is_controller=True, tokenizer=_Decode(texts), pool=pool, cfg=cfg,
                                   prompts=SimpleNamespace(opens_think=opens))
            return Session.score(fake, rollout, ["42"] * 3)

        rewards, correct = score(True)
        assert correct.tolist() == [1.0, 0.0, 0.0]  # cut off while thinking: no committed answer
        assert rewards.tolist() == [cfg.algo.reward_correct, cfg.algo.reward_wrong, cfg.algo.reward_wrong]
        assert score(False)[1].tolist() == [1.0, 1.0, 0.0]
        assert isinstance(rewards, torch.Tensor)
